"""Unit text for figures: SI prefixes that read well ("200 µV", not "0.0002 volts").

NWB stores values in base SI units named in words ("volts"); a scientist reads µV and mV.
These helpers turn a value and a unit into a prefixed number and symbol, squared where the
quantity is a power.
"""

from __future__ import annotations

import math

__all__ = ["label_and_factor", "prefixed", "quantity_text", "si", "unit_text"]

SI_SYMBOLS = {"V", "A", "m", "s", "S", "Ω", "W", "Hz", "T", "g", "N", "Pa", "K"}
SI_NAMES = {
    "volt": "V", "volts": "V", "ampere": "A", "amperes": "A", "amp": "A", "amps": "A",
    "meter": "m", "meters": "m", "metre": "m", "metres": "m", "second": "s", "seconds": "s",
    "siemens": "S", "ohm": "Ω", "ohms": "Ω", "watt": "W", "watts": "W", "hertz": "Hz",
    "tesla": "T", "gram": "g", "grams": "g", "newton": "N", "newtons": "N", "pascal": "Pa",
    "kelvin": "K",
}  # fmt: skip
PREFIXES = {-12: "p", -9: "n", -6: "µ", -3: "m", 0: "", 3: "k", 6: "M", 9: "G"}
PREFIX_OF = {"p": -12, "n": -9, "u": -6, "µ": -6, "μ": -6, "m": -3, "k": 3, "M": 6, "G": 9}


def si(unit: str) -> tuple[str, int] | None:
    """``(symbol, exponent)`` of an SI unit: "volts" -> ("V", 0), "mV" -> ("V", -3)."""
    unit = unit.strip()
    if unit in SI_SYMBOLS:
        return unit, 0
    if unit.lower() in SI_NAMES:
        return SI_NAMES[unit.lower()], 0
    if len(unit) > 1 and unit[0] in PREFIX_OF and unit[1:] in SI_SYMBOLS:
        return unit[1:], PREFIX_OF[unit[0]]
    return None


def prefixed(value: float, unit: str, power: int = 1) -> tuple[float, str]:
    """``value`` in ``unit``**``power`` -> (number, prefixed unit) that read well.

    >>> prefixed(2e-4, "volts"), prefixed(2.5e-5, "V", power=2), prefixed(3.0, "degC")
    ((200.0, 'µV'), (25.0, 'mV'), (3.0, 'degC'))
    """
    parsed = si(unit)
    if parsed is None:
        return value, unit
    symbol, exponent = parsed
    if value == 0 or not math.isfinite(value):
        return value * 10.0 ** (power * exponent), symbol
    magnitude = math.log10(abs(value)) + power * exponent
    chosen = min(max(3 * math.floor(magnitude / (3 * power) + 1e-9), -12), 9)
    return float(f"{value * 10.0 ** (power * (exponent - chosen)):.12g}"), PREFIXES[chosen] + symbol


def unit_text(unit: str, power: int = 1) -> str:
    """A unit raised to ``power`` (1 or 2): one word takes the square, a phrase its brackets.

    >>> unit_text("V", 2), unit_text("counts", 2), unit_text("stored units", 2)
    ('V²', 'counts²', '(stored units)²')
    """
    if power == 1 or not unit:
        return unit
    one_word = all(c.isalnum() or c in "µμ°Ω" for c in unit)
    return f"{unit}²" if si(unit) or one_word else f"({unit})²"


def quantity_text(value: float, unit: str, power: int = 1) -> str:
    """``2e-4, "volts"`` -> ``"200 µV"``.

    >>> quantity_text(2e-4, "volts"), quantity_text(50, "mV"), quantity_text(5, "degC")
    ('200 µV', '50 mV', '5 degC')
    """
    number, shown = prefixed(value, unit, power)
    return f"{number:.3g} {unit_text(shown, power)}".strip()


def label_and_factor(name: str, unit: str, power: int, largest: float) -> tuple[str, float]:
    """An axis label with its SI-prefixed unit, and the factor from values to tick numbers.

    >>> label_and_factor("power", "volts", 2, 3e-5)
    ('power (mV²)', 1000000.0)
    >>> label_and_factor("power", "stored units", 2, 3.0)[0]  # no "((...)²)"
    'power, (stored units)²'
    """
    number, shown = prefixed(largest, unit, power)
    text = unit_text(shown, power)
    factor = number / largest if largest and math.isfinite(largest) else 1.0
    if not text:
        label = name
    elif text.startswith("("):
        label = f"{name}, {text}"
    else:
        label = f"{name} ({text})"
    return label, float(f"{factor:.12g}")
