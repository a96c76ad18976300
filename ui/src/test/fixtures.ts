/** Test data and a fake shell for component tests (never part of the bundle). */
import type {
  ActionDetail_Serialize,
  ActionKey,
  ApiError_Serialize,
  AppInfo,
  BackendStatus_Serialize,
  Change,
  DecisionInput,
  DecisionReport_Serialize,
  DeliveryState,
  InboxView_Serialize,
  PendingAction_Serialize,
  TimelineEvent_Serialize,
} from "../bindings.ts";
import type { Api, Commands } from "../lib/api.ts";

type Res<T> = { status: "ok"; data: T } | { status: "error"; error: ApiError_Serialize };

export const ok = <T>(data: T): Res<T> => ({ status: "ok", data });
export const err = <T>(code: string, message: string, extra: Partial<ApiError_Serialize> = {}): Res<T> => ({
  status: "error",
  error: { code, message, changes: [], current: null, ...extra },
});

export function key(id: string, backend = "prod"): ActionKey {
  return { backend, external_id: id };
}

export function action(id: string, over: Partial<PendingAction_Serialize> = {}): PendingAction_Serialize {
  const now = Date.now();
  return {
    key: key(id),
    snapshot_hash: `hash-${id}-1`,
    kind: "db_session",
    title: `Request ${id}`,
    summary: "Summary text",
    requester: "dana@example.com",
    requested_at: new Date(now - 120_000).toISOString(),
    expires_at: new Date(now + 20 * 60_000).toISOString(),
    resource: "prod-billing",
    details: [{ key: "query", value: "SELECT 1;" }],
    approvals_required: 1,
    reviews: [],
    status: "pending",
    web_url: null,
    ...over,
  };
}

export function event(kind: string, over: Partial<TimelineEvent_Serialize> = {}): TimelineEvent_Serialize {
  return {
    at: new Date(Date.now() - 60_000).toISOString(),
    source: "backend",
    kind: kind as TimelineEvent_Serialize["kind"],
    actor: "policy-engine",
    text: `${kind} text`,
    ...over,
  };
}

export function backend(name: string, over: Partial<BackendStatus_Serialize> = {}): BackendStatus_Serialize {
  return {
    name,
    kind: "open-protocol",
    url: "https://example.invalid",
    status: "ok",
    last_error: null,
    last_error_code: null,
    last_error_at: null,
    next_retry_at: null,
    last_ok_at: null,
    pending: 0,
    ...over,
  };
}

export function report(input: DecisionInput, delivery: DeliveryState, over: Partial<DecisionReport_Serialize> = {}): DecisionReport_Serialize {
  return {
    decision: {
      action: input.action,
      verdict: input.verdict,
      reason: input.reason,
      decided_at: new Date().toISOString(),
      approver: "me@example.com",
      snapshot_hash: input.seen_snapshot_hash,
      idempotency_key: "idem-1",
      key_fingerprint: null,
      public_key: null,
      signature: null,
      delivery,
    },
    queued_because: null,
    offline: false,
    ...over,
  };
}

/**
 * A fake shell whose state the test edits: `actions` is the inbox, `detail` answers
 * openAction/actionDetail, `decide` answers decisions. Every call is recorded.
 */
export class FakeShell {
  actions: PendingAction_Serialize[] = [];
  backends: BackendStatus_Serialize[] = [backend("prod")];
  timeline: TimelineEvent_Serialize[] = [event("requested")];
  inboxResult: (() => Res<InboxView_Serialize>) | null = null;
  info: AppInfo = { approver: "me@example.com", embedded: true, data_dir: "/tmp/x" };
  decideResult: (input: DecisionInput) => Res<DecisionReport_Serialize> = (input) =>
    ok(report(input, { state: "delivered" }));
  calls: { name: string; arg?: unknown }[] = [];
  /**
   * Answers for the commands the views' own tests need (history, audit, settings).
   * A command that is neither here nor below answers `not_in_fake`, recorded like the rest.
   */
  extra: Partial<Commands> = {};
  #listener: ((change: Change) => void) | null = null;

  count(name: string): number {
    return this.calls.filter((c) => c.name === name).length;
  }

  emit(change: Change): void {
    this.#listener?.(change);
  }

  #detail(k: ActionKey): Res<ActionDetail_Serialize> {
    const a = this.actions.find((x) => x.key.external_id === k.external_id);
    if (a === undefined) return err("not_found", "no such action");
    return ok({ action: a, timeline: this.timeline, decisions: [] });
  }

  api(): Api {
    const base: Partial<Commands> = {
      inbox: () => {
        this.calls.push({ name: "inbox" });
        const res = this.inboxResult?.() ?? ok({ actions: this.actions, backends: this.backends, read_at: new Date().toISOString() });
        return Promise.resolve(structuredClone(res));
      },
      actionDetail: (k) => {
        this.calls.push({ name: "actionDetail", arg: k });
        return Promise.resolve(structuredClone(this.#detail(k)));
      },
      openAction: (k) => {
        this.calls.push({ name: "openAction", arg: k });
        this.timeline = [...this.timeline, event("viewed", { source: "local", actor: "me@example.com", text: "Viewed" })];
        return Promise.resolve(structuredClone(this.#detail(k)));
      },
      decide: (input) => {
        this.calls.push({ name: "decide", arg: input });
        return Promise.resolve(structuredClone(this.decideResult(input)));
      },
      openInBrowser: (k) => {
        this.calls.push({ name: "openInBrowser", arg: k });
        return Promise.resolve(ok(null));
      },
      appInfo: () => {
        this.calls.push({ name: "appInfo" });
        return Promise.resolve(ok(this.info));
      },
      notificationStatus: () => {
        this.calls.push({ name: "notificationStatus" });
        return Promise.resolve(ok({ available: true, detail: "test notification server", paused_until: null }));
      },
    };
    const commands = new Proxy(base, {
      get: (target, name) => {
        if (typeof name !== "string") return undefined;
        const own = (this.extra as Record<string, unknown>)[name] ?? (target as Record<string, unknown>)[name];
        if (own !== undefined) return own;
        return (arg?: unknown) => {
          this.calls.push({ name, arg });
          return Promise.resolve(err("not_in_fake", `${name} is not answered by this test`));
        };
      },
    }) as Commands;
    return {
      commands,
      onChanged: (callback) => {
        this.#listener = callback;
        return Promise.resolve(() => {
          this.#listener = null;
        });
      },
    };
  }
}

/** Polls until `check` passes (it throws while not yet), or fails after `ms`. */
export async function waitFor(check: () => void, ms = 2000): Promise<void> {
  const until = Date.now() + ms;
  for (;;) {
    try {
      check();
      return;
    } catch (e) {
      if (Date.now() > until) throw e;
      await new Promise((r) => setTimeout(r, 10));
    }
  }
}
