/** What a decision's outcome means, in words, for the result area. */
import type { ApiError_Serialize, DecisionReport_Serialize } from "../bindings.ts";

export type Outcome = "delivered" | "queued" | "rejected" | "stale" | "expired" | "error";

export interface ResultText {
  outcome: Outcome;
  /** Good, pending or bad: drives the colour only. */
  tone: "ok" | "pending" | "bad";
  headline: string;
  /** The backend's or engine's own words, shown as text; empty when there are none. */
  detail: string;
  /** The error code, for refusals. */
  code?: string;
}

/** A successful `decide` call: the decision is recorded; where does delivery stand? */
export function describeReport(report: DecisionReport_Serialize): ResultText {
  const { decision } = report;
  const verb = decision.verdict === "approve" ? "Approval" : decision.verdict === "choose" ? "Choice" : "Denial";
  const backend = decision.action.backend;
  switch (decision.delivery.state) {
    case "delivered":
      return {
        outcome: "delivered",
        tone: "ok",
        headline: `${verb} delivered to ${backend}`,
        detail: "",
      };
    case "queued":
      return {
        outcome: "queued",
        tone: "pending",
        headline: report.offline
          ? `${verb} recorded offline — queued for ${backend}`
          : `${verb} recorded — queued for delivery to ${backend}`,
        detail: report.queued_because ?? (report.offline ? `${backend} could not be reached` : ""),
      };
    case "rejected":
      return {
        outcome: "rejected",
        tone: "bad",
        headline: `${backend} rejected the ${verb.toLowerCase()}`,
        detail: decision.delivery.reason,
      };
    case "stale":
      return {
        outcome: "stale",
        tone: "bad",
        headline: `${backend} refused it: the request changed before delivery`,
        detail: `current snapshot ${decision.delivery.current_snapshot_hash}`,
      };
    case "expired":
      return {
        outcome: "expired",
        tone: "bad",
        headline: `The request expired before the ${verb.toLowerCase()} reached ${backend}`,
        detail: "",
      };
  }
}

/** A refused `decide` call other than a stale snapshot (handled by the refusal panel). */
export function describeError(error: ApiError_Serialize): ResultText {
  return {
    outcome: "error",
    tone: "bad",
    headline: "Not recorded",
    detail: error.message,
    code: error.code,
  };
}

/** The code under which the engine refuses a decision on a snapshot that changed. */
export const STALE_CODE = "changed";
