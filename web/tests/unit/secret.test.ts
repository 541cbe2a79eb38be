import { describe, expect, it } from "vitest";

import { type KeyValueStore, SECRET_KEY, clearSecret, loadSecret, saveSecret } from "../../src/lib/secret";

class MemoryStore implements KeyValueStore {
  readonly map = new Map<string, string>();
  getItem(key: string): string | null {
    return this.map.get(key) ?? null;
  }
  setItem(key: string, value: string): void {
    this.map.set(key, value);
  }
  removeItem(key: string): void {
    this.map.delete(key);
  }
}

/** Storage the browser refuses (private mode, storage disabled, quota). */
class RefusingStore implements KeyValueStore {
  getItem(): string | null {
    throw new DOMException("denied", "SecurityError");
  }
  setItem(): void {
    throw new DOMException("full", "QuotaExceededError");
  }
  removeItem(): void {
    throw new DOMException("denied", "SecurityError");
  }
}

function stores() {
  return { session: new MemoryStore(), local: new MemoryStore() };
}

describe("where the secret is kept", () => {
  it("for this tab only by default: sessionStorage, not localStorage", () => {
    const s = stores();
    expect(saveSecret(s, "tsk_tab", false)).toBe("session");
    expect(s.session.getItem(SECRET_KEY)).toBe("tsk_tab");
    expect(s.local.getItem(SECRET_KEY)).toBeNull();
    expect(loadSecret(s)).toBe("tsk_tab");
  });

  it("on this device when remembered: localStorage, not sessionStorage", () => {
    const s = stores();
    expect(saveSecret(s, "tsk_device", true)).toBe("local");
    expect(s.local.getItem(SECRET_KEY)).toBe("tsk_device");
    expect(s.session.getItem(SECRET_KEY)).toBeNull();
    expect(loadSecret(s)).toBe("tsk_device");
    // A new tab (empty sessionStorage) still finds it.
    expect(loadSecret({ session: new MemoryStore(), local: s.local })).toBe("tsk_device");
  });

  it("a tab-only secret is gone in a new tab", () => {
    const s = stores();
    saveSecret(s, "tsk_tab", false);
    expect(loadSecret({ session: new MemoryStore(), local: s.local })).toBeNull();
  });

  it("a secret an earlier version kept in localStorage keeps working", () => {
    const s = stores();
    s.local.setItem(SECRET_KEY, "tsk_old");
    expect(loadSecret(s)).toBe("tsk_old");
  });

  it("signing in again moves the secret: the other place forgets it", () => {
    const s = stores();
    saveSecret(s, "tsk_a", true);
    saveSecret(s, "tsk_b", false);
    expect(s.local.getItem(SECRET_KEY)).toBeNull();
    expect(s.session.getItem(SECRET_KEY)).toBe("tsk_b");
    saveSecret(s, "tsk_c", true);
    expect(s.session.getItem(SECRET_KEY)).toBeNull();
    expect(s.local.getItem(SECRET_KEY)).toBe("tsk_c");
  });

  it("this tab's secret wins over the device's", () => {
    const s = stores();
    s.local.setItem(SECRET_KEY, "tsk_device");
    s.session.setItem(SECRET_KEY, "tsk_tab");
    expect(loadSecret(s)).toBe("tsk_tab");
  });

  it("signing out clears both", () => {
    const s = stores();
    s.local.setItem(SECRET_KEY, "tsk_device");
    s.session.setItem(SECRET_KEY, "tsk_tab");
    s.local.setItem("tether.theme", "dark");
    clearSecret(s);
    expect(s.local.getItem(SECRET_KEY)).toBeNull();
    expect(s.session.getItem(SECRET_KEY)).toBeNull();
    expect(loadSecret(s)).toBeNull();
    // Only the secret goes.
    expect(s.local.getItem("tether.theme")).toBe("dark");
  });

  it("storage that is missing or refused does not throw; the secret then lasts as long as the page", () => {
    for (const s of [
      { session: null, local: null },
      { session: new RefusingStore(), local: new RefusingStore() },
    ]) {
      expect(saveSecret(s, "tsk_x", false)).toBeNull();
      expect(saveSecret(s, "tsk_x", true)).toBeNull();
      expect(loadSecret(s)).toBeNull();
      expect(() => clearSecret(s)).not.toThrow();
    }
  });

  it("a refused sessionStorage never sends a tab-only secret to localStorage", () => {
    const s = { session: new RefusingStore(), local: new MemoryStore() };
    expect(saveSecret(s, "tsk_tab", false)).toBeNull();
    expect(s.local.getItem(SECRET_KEY)).toBeNull();
  });
});
