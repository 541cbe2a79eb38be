import { useState } from "preact/hooks";

import { authError, route, signIn } from "../app/store";
import { IconKey, Logo } from "./icons";

export function SignIn() {
  const [value, setValue] = useState("");
  const [remember, setRemember] = useState(false);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(authError.value);
  const pairing = route.value.name === "pair" && route.value.code;

  async function submit(e: Event) {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      await signIn(value, remember);
    } catch (err) {
      setError(err instanceof Error ? err.message : String(err));
      setBusy(false);
    }
  }

  return (
    <main class="signin">
      <div class="signin-card">
        <div class="signin-brand">
          <Logo size={44} />
          <h1>Tether</h1>
        </div>
        <p class="signin-lead">
          {pairing
            ? "Sign in to approve the worker that showed you this link."
            : "Drive the coding agents on your machines from any browser."}
        </p>
        <form onSubmit={submit} class="stack">
          <label class="field">
            <span class="field-label">Secret</span>
            <div class="input-icon">
              <IconKey size={16} />
              <input
                type="password"
                name="secret"
                autocomplete="current-password"
                placeholder="tsk_…"
                value={value}
                onInput={(e) => setValue((e.target as HTMLInputElement).value)}
                aria-invalid={error ? "true" : undefined}
                aria-describedby={error ? "signin-error" : "signin-help"}
                required
                autoFocus
              />
            </div>
          </label>
          <div class="remember">
            <label class="check">
              <input
                type="checkbox"
                name="remember"
                checked={remember}
                onChange={(e) => setRemember((e.target as HTMLInputElement).checked)}
                aria-describedby="remember-hint"
              />
              <span>Remember this device</span>
            </label>
            <p class="check-hint" id="remember-hint">
              Keep me signed in on this device. Leave unticked on a shared computer.
            </p>
          </div>
          {error ? (
            <p class="form-error" id="signin-error" role="alert">
              {error}
            </p>
          ) : null}
          <button type="submit" class="btn btn-primary btn-block" disabled={busy || !value.trim()}>
            {busy ? <span class="spinner" aria-hidden="true" /> : null}
            Sign in
          </button>
        </form>
        <p class="signin-help" id="signin-help">
          No secret yet? On the machine that runs Tether, <code>tether user add NAME</code> makes one (shown once), and{" "}
          <code>tether user reset NAME</code> replaces a lost one. It stays in this browser only.
        </p>
      </div>
    </main>
  );
}
