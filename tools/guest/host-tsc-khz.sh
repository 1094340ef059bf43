#!/usr/bin/env bash
# Prints the host's TSC frequency in kHz (host-side helper, not part of the guest image).
#
# Why: under TCG the guest's TSC ticks at the host's TSC rate, and -M microvm has neither HPET nor
# ACPI PM timer, so the guest kernel calibrates its TSC against the PIT alone. On a loaded host
# that calibration fails ("tsc: Unable to calibrate against PIT") and the boot hangs. Booting with
# "tsc_early_khz=$(host-tsc-khz.sh) tsc=reliable" skips calibration and the clocksource watchdog.
# Sources, best first: the kernel's own calibration in the log, then /proc/cpuinfo (exact on hosts
# with tsc_known_freq such as nested VMs, approximate elsewhere). Exits 1 if nothing is known.
set -euo pipefail
khz=""
if mhz=$(dmesg 2>/dev/null | sed -n 's/.*tsc: Refined TSC clocksource calibration: \([0-9.]*\) MHz.*/\1/p' | tail -n1) &&
   [ -n "$mhz" ]; then
  khz=$(awk -v m="$mhz" 'BEGIN { printf "%d", m * 1000 }')
elif mhz=$(dmesg 2>/dev/null | sed -n 's/.*tsc: Detected \([0-9.]*\) MHz processor.*/\1/p' | tail -n1) &&
     [ -n "$mhz" ]; then
  khz=$(awk -v m="$mhz" 'BEGIN { printf "%d", m * 1000 }')
else
  khz=$(awk -F: '/^cpu MHz/ { printf "%d", $2 * 1000; exit }' /proc/cpuinfo)
fi
[ -n "$khz" ] && [ "$khz" -gt 0 ] || exit 1
echo "$khz"
