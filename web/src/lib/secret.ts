// Where the user's secret is kept in the browser. By default for this tab
// only (sessionStorage: it survives a reload, and goes when the tab closes);
// on a device the person asked to remember, in localStorage. Signing out
// clears both. Earlier versions always used localStorage: such a secret was,
// in effect, remembered, and keeps working.

export const SECRET_KEY = "tether.secret";

/** The part of the Web Storage API used here. */
export interface KeyValueStore {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
  removeItem(key: string): void;
}

/** This tab's storage and the device's; null where the browser has none (or refuses it). */
export interface SecretStores {
  session: KeyValueStore | null;
  local: KeyValueStore | null;
}

function read(store: KeyValueStore | null): string | null {
  try {
    return store?.getItem(SECRET_KEY) || null;
  } catch {
    return null;
  }
}

function write(store: KeyValueStore | null, value: string): boolean {
  if (!store) return false;
  try {
    store.setItem(SECRET_KEY, value);
    return true;
  } catch {
    return false;
  }
}

function remove(store: KeyValueStore | null): void {
  try {
    store?.removeItem(SECRET_KEY);
  } catch {
    // Nothing stored there, then.
  }
}

/** The secret this tab keeps, else the one this device remembers. */
export function loadSecret(stores: SecretStores): string | null {
  return read(stores.session) ?? read(stores.local);
}

/**
 * Keeps the secret for this tab only, or (`remember`) on this device, and
 * removes it from the other place: signing in without remembering also
 * makes the device forget an earlier secret. Where storage is refused the
 * secret lasts as long as the page. Returns where it went.
 */
export function saveSecret(stores: SecretStores, value: string, remember: boolean): "session" | "local" | null {
  const [keep, drop] = remember ? (["local", "session"] as const) : (["session", "local"] as const);
  remove(stores[drop]);
  return write(stores[keep], value) ? keep : null;
}

/** Forgets the secret everywhere (signing out). */
export function clearSecret(stores: SecretStores): void {
  remove(stores.session);
  remove(stores.local);
}
