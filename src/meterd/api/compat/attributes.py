"""The tenant page's own entitlement fields (``attributes``), which meterd has no
column for: one JSON object per entitlement, under the page's names, validated
exactly as the page types them. Written through ``POST``/``PATCH
/v1/entitlements`` (``attributes``), shown only on the tenant page
(``api/compat/tenant.py``): native reads do not return them.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from meterd.core.domain import PRINTABLE_PATTERN


class BundleType(StrEnum):
    ADVANCED = "ADVANCED"
    ESSENTIALS = "ESSENTIALS"
    PROFESSIONAL = "PROFESSIONAL"
    API = "API"
    STANDARD = "STANDARD"
    PLUS = "PLUS"
    PREMIUM = "PREMIUM"
    CONSUMER = "CONSUMER"


class FaceRecognitionType(StrEnum):
    ENHANCED = "ENHANCED"
    STANDARD = "STANDARD"


SeedText = Annotated[str, Field(min_length=1, max_length=200, pattern=PRINTABLE_PATTERN)]
Int32 = Annotated[int, Field(ge=-(2**31), le=2**31 - 1)]


class Bundle(BaseModel):
    """A service or user bundle, as the page has it."""

    model_config = ConfigDict(extra="forbid")

    bundleType: BundleType
    rank: Int32 | None = None
    usageReportId: SeedText | None = None


class AdditionalFeatures(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enhancedGeoLocation: bool | None = None


class TenantAttributes(BaseModel):
    """The page's fields meterd has no column for, kept on an entitlement as one JSON
    object (``attributes``) under the page's own names. Each is shown where the page
    has it, from the grant that fills that part of the page; set elsewhere, it is kept
    and not shown."""

    model_config = ConfigDict(extra="forbid")

    faceRecognitionType: FaceRecognitionType | None = Field(
        default=None, description="id_proofing grants: idProofing[].faceRecognitionType"
    )
    serviceBundles: list[Bundle] | None = Field(
        default=None, max_length=50, description="the issuance grant: issuance.serviceBundles"
    )
    addOn: SeedText | None = Field(
        default=None,
        description="issuance, fleet_management and pay_to_print grants: the block's addOn",
    )
    additionalFeatures: AdditionalFeatures | None = Field(
        default=None, description="the main (USERS or TRANSACTIONS) grant"
    )
    smartLoginEnabled: bool | None = Field(
        default=None, description="the main (USERS or TRANSACTIONS) grant"
    )
    userBundles: list[Bundle] | None = Field(
        default=None, max_length=50, description="the main (USERS or TRANSACTIONS) grant"
    )

    def stored(self) -> dict[str, Any]:
        """The JSON object to store: only the fields given."""
        return self.model_dump(mode="json", exclude_none=True)
