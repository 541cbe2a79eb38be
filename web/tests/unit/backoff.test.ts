import { describe, expect, it } from "vitest";

import { Backoff, DEFAULT_BACKOFF, backoffDelay } from "../../src/lib/backoff";

describe("reconnect backoff", () => {
  const opts = { baseMs: 500, factor: 2, maxMs: 8000, jitter: 0.5 };

  it("grows exponentially up to the cap", () => {
    const top = (n: number) => backoffDelay(n, opts, () => 1);
    expect([0, 1, 2, 3, 4, 5, 9].map(top)).toEqual([500, 1000, 2000, 4000, 8000, 8000, 8000]);
  });

  it("keeps the jittered delay within [half, full] of the step", () => {
    for (let n = 0; n < 8; n++) {
      const full = Math.min(opts.maxMs, opts.baseMs * 2 ** n);
      expect(backoffDelay(n, opts, () => 0)).toBe(full / 2);
      for (let i = 0; i < 50; i++) {
        const d = backoffDelay(n, opts);
        expect(d).toBeGreaterThanOrEqual(full / 2);
        expect(d).toBeLessThanOrEqual(full);
      }
    }
  });

  it("spreads clients apart (jitter is real)", () => {
    const delays = new Set(Array.from({ length: 40 }, () => backoffDelay(3, opts)));
    expect(delays.size).toBeGreaterThan(10);
  });

  it("tolerates odd input", () => {
    expect(backoffDelay(-3, opts, () => 1)).toBe(500);
    expect(backoffDelay(2.7, opts, () => 1)).toBe(2000);
    expect(backoffDelay(1, { ...opts, jitter: 0 }, () => 0.3)).toBe(1000);
    expect(backoffDelay(1, opts, () => 7)).toBe(1000);
  });

  it("counts attempts and resets", () => {
    const b = new Backoff(opts, () => 1);
    expect([b.next(), b.next(), b.next()]).toEqual([500, 1000, 2000]);
    expect(b.attempts).toBe(3);
    b.reset();
    expect(b.attempts).toBe(0);
    expect(b.next()).toBe(500);
  });

  it("has sane defaults: a quick first retry, a bounded wait", () => {
    expect(backoffDelay(0, DEFAULT_BACKOFF, () => 1)).toBeLessThanOrEqual(1000);
    expect(backoffDelay(50, DEFAULT_BACKOFF, () => 1)).toBeLessThanOrEqual(30_000);
  });
});
