"""The whole topology wired in one place: the worker app with its topics, tables and agents."""

from __future__ import annotations

import faust

from loyalty.agents import accounts, daily, health, profiles, redemptions, referrals, web
from loyalty.agents import catalog as catalog_feed
from loyalty.agents.accounts import AccountProcessor, Clock, wall_clock_ms
from loyalty.core.catalog import CatalogView
from loyalty.core.program import load_program
from loyalty.streams.app import new_app
from loyalty.streams.settings import Settings
from loyalty.streams.topics import declare_topics
from loyalty.tables.definitions import define_tables


def create_app(settings: Settings, clock: Clock = wall_clock_ms) -> faust.App:
    """A worker app for ``settings``; raises ``ProgramError`` on an invalid program file."""
    program = load_program(settings.program_path)
    app = new_app(settings, middlewares=[web.guard])
    topics = declare_topics(app, settings)
    tables = define_tables(app, settings)
    # This worker's copy of the whole catalog and of every reward's reserved stock, kept
    # current by its own consumer; GET /catalog and the redemption agent read it.
    catalog = CatalogView()
    catalog_feed.register(app, settings, catalog)
    accounts.register(app, AccountProcessor(settings, program, topics, tables, clock))
    referrals.register(app, referrals.ReferralProcessor(settings, topics, tables))
    daily.register(app, settings, program, topics)
    web.register(app)
    health.register(app, topics.member_inputs.topics, catalog)
    profiles.register(app, settings, program, tables.member_to_state, clock)
    redemptions.register(
        app, redemptions.RedemptionProcessor(settings, topics, tables, catalog, clock), catalog
    )
    return app
