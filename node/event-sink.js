// The event sink for Node.js: one JSON line per event, appended to
// $EVENTS_FILE. Synchronous, because the component calls it synchronously.
import { appendFileSync } from 'node:fs';

const file = process.env.EVENTS_FILE ?? 'events.jsonl';

/** Record one event (brasilintel:auth/event-sink.emit). */
export function emit(event) {
  appendFileSync(file, JSON.stringify({ ...event, runId: event.runId ?? null }) + '\n');
}
