"""The contact's fixed fields: the catalogue the seed's recipients carry, one column each."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FixedField:
    """One fixed field as the seed describes it (the ``fixed_fields`` list items)."""

    id: int
    name: str
    type: str
    label: str
    validation: str | None = None
    required: bool = False
    hidden: bool = False
    read_only: bool = False
    sort_order: int = 0


# In the order the seed lists them; the ids are the seed's.
FIXED_FIELDS: tuple[FixedField, ...] = (
    FixedField(17, "salutation", "text", "Salutation"),
    FixedField(27, "state_region", "text", "State/Region"),
    FixedField(19, "last_name", "text", "Last name", required=True),
    FixedField(36, "mobile_phone_number", "text", "Mobile phone number"),
    FixedField(21, "landline_phone_number", "text", "Landline phone number"),
    FixedField(24, "address", "text", "Address"),
    FixedField(26, "city", "text", "City"),
    FixedField(18, "first_name", "text", "First name", required=True),
    FixedField(28, "country", "single_choice", "Country"),
    FixedField(20, "email", "text", "Email", validation="email"),
    FixedField(38, "date_of_birth", "date", "Date of Birth", validation="date_before_tomorrow"),
    FixedField(23, "title", "text", "Title"),
    FixedField(25, "zip_code", "text", "Zip code"),
)

FIXED_FIELD_NAMES: frozenset[str] = frozenset(f.name for f in FIXED_FIELDS)
BY_NAME: dict[str, FixedField] = {f.name: f for f in FIXED_FIELDS}

# Consent channels a contact carries, and the one each campaign type needs.
CONSENT_CHANNELS: tuple[str, ...] = ("email", "letter", "call", "sms")
CHANNEL_OF_TYPE: dict[str, str] = {"email": "email", "letter": "letter", "telephone": "call"}
