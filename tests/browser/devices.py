"""Browser context options for the screen sizes the tests look at."""

from __future__ import annotations

from typing import Any

PHONE_WIDTH = 390
PHONE: dict[str, Any] = {
    "viewport": {"width": PHONE_WIDTH, "height": 844},
    "device_scale_factor": 2,
    "is_mobile": True,
    "has_touch": True,
}
DESKTOP: dict[str, Any] = {"viewport": {"width": 1280, "height": 900}, "device_scale_factor": 1}
