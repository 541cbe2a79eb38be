import { conn, drawerOpen, me, newSessionDialog, now, route, sessions, sessionsLoaded, setTheme, signOut, theme, workers } from "../app/store";
import { href } from "../app/route";
import { relativeTime } from "../lib/format";
import { modelLabel } from "./common";
import { IconLaptop, IconLink, IconLogOut, IconMoon, IconPlus, IconSun, IconX, Logo } from "./icons";

export function Sidebar() {
  const r = route.value;
  const list = sessions.value;
  const ws = workers.value;
  const status = conn.value.status;
  const dark = theme.value === "dark";
  const name = me.value?.user_name ?? "";

  return (
    <nav class="sidebar" aria-label="Sidebar" id="sidebar">
      <div class="sidebar-head">
        <a class="brand" href="#/" aria-label="Tether home">
          <Logo size={26} />
          <span>Tether</span>
        </a>
        <span
          class={`conn-dot conn-${status}`}
          role="img"
          aria-label={status === "open" ? "Connected" : "Not connected"}
          title={status === "open" ? "Connected" : "Not connected"}
        />
        <button
          type="button"
          class="icon-btn drawer-close"
          aria-label="Close menu"
          onClick={() => (drawerOpen.value = false)}
        >
          <IconX size={18} />
        </button>
      </div>

      <div class="sidebar-actions">
        <button
          type="button"
          class="btn btn-primary btn-block"
          onClick={() => {
            drawerOpen.value = false;
            newSessionDialog.value = {};
          }}
        >
          <IconPlus size={16} /> New session
        </button>
      </div>

      <ul class="nav-list">
        <li>
          <a href="#/" class="nav-item" aria-current={r.name === "machines" ? "page" : undefined}>
            <IconLaptop size={16} /> Machines
          </a>
        </li>
        <li>
          <a href="#/pair" class="nav-item" aria-current={r.name === "pair" ? "page" : undefined}>
            <IconLink size={16} /> Pair a worker
          </a>
        </li>
      </ul>

      <div class="sidebar-section">
        <a class="section-title" href="#/sessions">
          Sessions
        </a>
      </div>
      <ul class="session-nav" aria-label="Recent sessions">
        {list.length === 0 ? (
          <li class="session-nav-empty">{sessionsLoaded.value ? "No sessions yet" : "Loading…"}</li>
        ) : (
          list.slice(0, 60).map((s) => {
            const w = ws.get(s.worker_id);
            const active = r.name === "session" && r.sessionId === s.session_id;
            return (
              <li key={s.session_id}>
                <a
                  href={href({ name: "session", sessionId: s.session_id })}
                  class={`session-link status-${s.status}`}
                  aria-current={active ? "page" : undefined}
                >
                  <span class={`status-dot sd-${s.status}`} aria-hidden="true" />
                  <span class="session-link-main">
                    <span class="session-link-title">{s.title || "Untitled session"}</span>
                    <span class="session-link-meta">
                      {w ? w.name : modelLabel(undefined, s.model.provider_id, s.model.model_id)} ·{" "}
                      {relativeTime(s.updated_at, now.value)}
                    </span>
                  </span>
                </a>
              </li>
            );
          })
        )}
      </ul>

      <div class="sidebar-foot">
        <div class="user-chip" title={name}>
          <span class="avatar" aria-hidden="true">
            {name.slice(0, 1).toUpperCase() || "?"}
          </span>
          <span class="user-name">{name || "…"}</span>
        </div>
        <button
          type="button"
          class="icon-btn"
          aria-label={dark ? "Switch to light theme" : "Switch to dark theme"}
          title={dark ? "Light theme" : "Dark theme"}
          onClick={() => setTheme(dark ? "light" : "dark")}
        >
          {dark ? <IconSun size={18} /> : <IconMoon size={18} />}
        </button>
        <button type="button" class="icon-btn" aria-label="Sign out" title="Sign out" onClick={() => signOut()}>
          <IconLogOut size={18} />
        </button>
      </div>
    </nav>
  );
}
