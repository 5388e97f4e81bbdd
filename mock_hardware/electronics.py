"""The board's electronics: DAC quantization, TIA gain and saturation, ADC quantization."""

from __future__ import annotations

import functools
import math

import numpy as np
import numpy.typing as npt
from pydantic import ConfigDict, Field

from drivers.config_model import ConfigModel

FloatArray = npt.NDArray[np.float64]


@functools.lru_cache(maxsize=16)
def _fitting_limits(gains: tuple[float, ...], full_scale: float) -> tuple[float, ...] | None:
    """Per gain ``g``, the largest magnitude ``m`` with ``m * g <= full_scale`` as float64 computes it
    (``fl(m g)`` never falls as ``m`` grows, so ``m <= limit`` holds exactly where the product fits;
    NaN and inf fit nowhere either way). ``None`` unless every gain is positive and finite."""
    if not all(0 < g < math.inf for g in gains) or not 0 < full_scale < math.inf:
        return None
    limits = []
    for gain in gains:
        limit = np.float64(full_scale) / np.float64(gain)
        while np.nextafter(limit, np.inf) * gain <= full_scale:
            limit = np.nextafter(limit, np.inf)
        while limit * gain > full_scale:
            limit = np.nextafter(limit, -np.inf)
        limits.append(float(limit))
    return tuple(limits)


class Electronics(ConfigModel):
    """Converter resolutions and ranges of the emulated board. SI units."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dac_bits: int = Field(16, ge=4, le=24)
    dac_row_range: tuple[float, float] = (-5.0, 5.0)
    dac_col_range: tuple[float, float] = (-5.0, 5.0)
    dac_gate_range: tuple[float, float] = (0.0, 6.0)
    adc_bits: int = Field(14, ge=4, le=24)
    adc_range: tuple[float, float] = (-2.5, 2.5)
    tia_gains: tuple[float, ...] = (1e2, 1e3, 1e4, 1e5, 1e6)
    tia_rail: float = Field(3.0, gt=0, description="TIA output saturation, V")
    autorange_headroom: float = Field(0.8, gt=0, le=1, description="fraction of ADC full scale autorange aims below")

    def dac_step(self, dac_range: tuple[float, float]) -> float:
        """One DAC code, V."""
        low, high = dac_range
        return float((high - low) / (2**self.dac_bits - 1))

    def quantize_dac(self, voltage: float, dac_range: tuple[float, float]) -> float:
        """The voltage a DAC actually outputs for a requested ``voltage`` inside its range.

        The codes are whole steps from 0 V (so 0 V is exactly 0 V) and a request between two codes
        gets the one nearer 0 V when the nearest would lie beyond it: the output's magnitude never
        exceeds the request's, so it never crosses a limit the request was checked against.
        """
        low, high = dac_range
        step = self.dac_step(dac_range)
        code = round(voltage / step)
        if abs(code * step) > abs(voltage):
            code -= 1 if code > 0 else -1
        lowest, highest = math.ceil(low / step - 1e-9), math.floor(high / step + 1e-9)
        return float(min(max(code, lowest), highest) * step)

    @property
    def adc_lsb(self) -> float:
        return float((self.adc_range[1] - self.adc_range[0]) / 2.0**self.adc_bits)

    def digitize(self, current: FloatArray, gain: FloatArray | float) -> tuple[FloatArray, FloatArray, FloatArray]:
        """Currents through a TIA of ``gain`` ohm into the ADC: (measured current, code, saturated)."""
        volts = current * gain
        tia_saturated = np.abs(volts) > self.tia_rail
        volts = np.clip(volts, -self.tia_rail, self.tia_rail)
        lowest, highest = -(2 ** (self.adc_bits - 1)), 2 ** (self.adc_bits - 1) - 1
        raw = np.round(volts / self.adc_lsb)
        code = np.clip(raw, lowest, highest)
        saturated = tia_saturated | (raw != code)
        return code * self.adc_lsb / gain, code, saturated

    def measure_autoranged(self, current: FloatArray) -> FloatArray:
        """Currents measured with the TIA gain chosen per sample: the highest gain that keeps the
        signal below the headroom of ADC full scale (the lowest gain when none does)."""
        gains = np.sort(np.asarray(self.tia_gains, dtype=np.float64))
        index = self._autorange_index(current, gains)
        # digitize() without the code and saturation outputs, in place: the same arithmetic
        gain = np.take(gains, index)
        volts = np.multiply(current, gain)
        np.clip(volts, -self.tia_rail, self.tia_rail, out=volts)
        np.divide(volts, self.adc_lsb, out=volts)
        np.round(volts, out=volts)
        np.clip(volts, -(2 ** (self.adc_bits - 1)), 2 ** (self.adc_bits - 1) - 1, out=volts)
        np.multiply(volts, self.adc_lsb, out=volts)
        np.divide(volts, gain, out=volts)
        return volts

    def _full_scale(self) -> float:
        """The ADC level autorange aims below, V."""
        return self.autorange_headroom * min(abs(self.adc_range[0]), abs(self.adc_range[1]))

    def _autorange_index(self, current: FloatArray, gains: FloatArray) -> npt.NDArray[np.int16]:
        """Per sample, the index (into the ascending ``gains``) of the gain autorange picks."""
        full_scale = self._full_scale()
        magnitude = np.abs(current)
        limits = _fitting_limits(tuple(float(g) for g in gains), full_scale)
        if limits is None:  # gains that are not positive and finite: by the definition
            index = np.full(magnitude.shape, -1, dtype=np.int16)
            product = np.empty_like(magnitude)
            for gain in gains:
                np.multiply(magnitude, gain, out=product)
                index += product <= full_scale
            np.maximum(index, 0, out=index)
            return index
        # The gains that fit (|I| g <= full scale) are a prefix of the ascending gains, and the index
        # is their count less one, 0 when none fits: a sample that fits a higher gain fits the lowest,
        # so the count of the higher gains that fit is the index. One comparison per gain above the
        # lowest, with the largest |I| each gain takes (VMM batches of convolution patches are a
        # hundred thousand samples; a per-sample search costs several times more).
        index = np.zeros(magnitude.shape, dtype=np.int16)
        fits = np.empty(magnitude.shape, dtype=bool)
        for limit in limits[1:]:
            np.less_equal(magnitude, limit, out=fits)
            index += fits
        return index

    def measure_autoranged_codes(self, current: FloatArray) -> tuple[FloatArray, npt.NDArray[np.int16]]:
        """What :meth:`measure_autoranged` measures, as the ADC gives it: (codes, index of the gain in
        the ascending gains). ``codes * adc_lsb / gain`` is the measured current."""
        gains = np.sort(np.asarray(self.tia_gains, dtype=np.float64))
        limits = _fitting_limits(tuple(float(g) for g in gains), self._full_scale())
        if limits is not None and current.dtype == np.float64 and current.flags.c_contiguous:
            from mock_hardware import _physics_kernels  # numba: loaded by the first reply in codes

            # The steps below and _autorange_index's in one compiled pass over the samples.
            codes = np.empty(current.shape)
            index = np.empty(current.shape, dtype=np.int16)
            _physics_kernels.autoranged_codes(
                current, gains, np.array(limits[1:]), float(self.tia_rail), self.adc_lsb,
                float(-(2 ** (self.adc_bits - 1))), float(2 ** (self.adc_bits - 1) - 1), codes, index,
            )  # fmt: skip
            return codes, index
        index = self._autorange_index(current, gains)
        volts = np.take(gains, index)  # the gain of each sample (take: a fifth less than indexing)
        np.multiply(current, volts, out=volts)
        np.clip(volts, -self.tia_rail, self.tia_rail, out=volts)
        np.divide(volts, self.adc_lsb, out=volts)
        np.round(volts, out=volts)
        np.clip(volts, -(2 ** (self.adc_bits - 1)), 2 ** (self.adc_bits - 1) - 1, out=volts)
        return volts, index
