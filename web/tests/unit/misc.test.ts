import { describe, expect, it } from "vitest";

import { href, parseRoute } from "../../src/app/route";
import { parseDiff } from "../../src/lib/diff";
import { cost, normalizeCode, randomId, relativeTime, tokens } from "../../src/lib/format";

describe("routes", () => {
  it("parses every screen and round-trips through href", () => {
    const routes = [
      { name: "machines" },
      { name: "sessions" },
      { name: "pair" },
      { name: "pair", code: "KX7P-Q2MD" },
      { name: "worker", workerId: "wkr_abc" },
      { name: "session", sessionId: "ses_0b9f0e2a-3c1d-4f7e-9a55-5b2f1c3d4e5f" },
    ] as const;
    for (const r of routes) expect(parseRoute(href(r))).toEqual(r);
  });

  it("falls back to machines", () => {
    expect(parseRoute("")).toEqual({ name: "machines" });
    expect(parseRoute("#/nowhere")).toEqual({ name: "machines" });
    expect(parseRoute("#/s/")).toEqual({ name: "machines" });
  });
});

describe("diffs", () => {
  it("numbers old and new lines from the hunk header", () => {
    const lines = parseDiff("--- a/x\n+++ b/x\n@@ -10,3 +10,3 @@ fn f\n a\n-b\n+c\n d\n\\ No newline at end of file\n");
    expect(lines.map((l) => [l.kind, l.oldNo, l.newNo, l.text])).toEqual([
      ["meta", undefined, undefined, "--- a/x"],
      ["meta", undefined, undefined, "+++ b/x"],
      ["hunk", undefined, undefined, "@@ -10,3 +10,3 @@ fn f"],
      ["context", 10, 10, "a"],
      ["del", 11, undefined, "b"],
      ["add", undefined, 11, "c"],
      ["context", 12, 12, "d"],
      ["meta", undefined, undefined, "\\ No newline at end of file"],
    ]);
  });
});

describe("formatting", () => {
  it("says how long ago", () => {
    const now = 1_000_000_000;
    expect(relativeTime(now - 10_000, now)).toBe("just now");
    expect(relativeTime(now - 5 * 60_000, now)).toBe("5 min ago");
    expect(relativeTime(now - 3 * 3_600_000, now)).toBe("3 h ago");
    expect(relativeTime(now - 26 * 3_600_000, now)).toBe("yesterday");
    expect(relativeTime(null, now)).toBe("never");
  });

  it("shortens token counts and costs", () => {
    expect([tokens(999), tokens(1200), tokens(45_000), tokens(2_500_000)]).toEqual(["999", "1.2k", "45k", "2.5M"]);
    expect([cost(0), cost(0.0042), cost(0.125), cost(3.5)]).toEqual(["$0", "$0.0042", "$0.125", "$3.50"]);
  });

  it("normalizes pairing codes as people type them", () => {
    expect(normalizeCode("kx7p q2md")).toBe("KX7P-Q2MD");
    expect(normalizeCode(" KX7P-Q2MD ")).toBe("KX7P-Q2MD");
  });

  it("mints ids the protocol accepts", () => {
    const id = randomId("ses_");
    expect(id).toMatch(/^ses_[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    expect(id.length).toBeLessThanOrEqual(64);
    expect(randomId("msg_")).not.toBe(randomId("msg_"));
  });
});
