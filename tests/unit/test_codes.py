from loyalty.core import codes


def test_codes_use_no_look_alike_characters():
    for member in ("m-1", "m-2", "anna@example", "x" * 64):
        for code in (codes.referral_code(member), codes.coupon_code(member, "e-1")):
            assert not set(code) & set("ILOU")
            assert set(code) <= set(codes.ALPHABET)


def test_codes_are_deterministic_and_distinct():
    assert codes.coupon_code("m-1", "e-1") == codes.coupon_code("m-1", "e-1")
    assert codes.coupon_code("m-1", "e-1") != codes.coupon_code("m-1", "e-2")
    referral = {codes.referral_code(f"member-{i}") for i in range(20_000)}
    assert len(referral) == 20_000


def test_typed_codes_are_normalised():
    code = codes.coupon_code("m-1", "e-1")
    typed = "-".join([code[:4], code[4:]]).lower().replace("0", "o").replace("1", "l")
    assert codes.normalize(typed) == code


def test_coupon_codes_carry_their_owner_and_a_check_character():
    code = codes.coupon_code("m-1", "e-1")
    assert code.startswith(codes.owner_tag("m-1"))
    assert codes.is_well_formed_coupon(code)
    wrong = code[:-1] + next(c for c in codes.ALPHABET if c != code[-1])
    assert not codes.is_well_formed_coupon(wrong)
    assert not codes.is_well_formed_coupon("SUMMER2026")
