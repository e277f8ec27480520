// Pure formatting helpers: numbers, sizes, durations, times.

export function duration(secs) {
  if (secs == null) return "–";
  const s = Math.floor(secs);
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ${s % 60}s`;
  const h = Math.floor(m / 60);
  if (h < 48) return `${h}h ${m % 60}m`;
  return `${Math.floor(h / 24)}d ${h % 24}h`;
}

export function bytes(n) {
  if (n == null) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let v = n;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u += 1;
  }
  return `${v < 10 && u > 0 ? v.toFixed(1) : Math.round(v)} ${units[u]}`;
}

export function percent(p) {
  return p == null ? "–" : `${p.toFixed(p < 10 ? 1 : 0)}%`;
}

export function micros(us) {
  if (us == null) return "–";
  if (us < 1000) return `${us} µs`;
  if (us < 1_000_000) return `${(us / 1000).toFixed(us < 10_000 ? 1 : 0)} ms`;
  return `${(us / 1_000_000).toFixed(1)} s`;
}

export function rate(perSec) {
  if (perSec == null) return "–";
  if (perSec === 0) return "0/s";
  if (perSec < 10) return `${perSec.toFixed(1)}/s`;
  return `${Math.round(perSec)}/s`;
}

export function time(ms) {
  const d = new Date(ms);
  const pad = (n) => String(n).padStart(2, "0");
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

export function release(id) {
  return id ? id.slice(0, 12) : "–";
}
