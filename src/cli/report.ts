// How the CLI reports a failure: one line, "visplay-native: <message>". A VisplayError's message is
// written for users and is all they need; a stack would only bury it. Any other error is a bug, so
// it says so and shows its stack on request (VISPLAY_DEBUG=1).
import { VisplayError } from '../errors.js';

export const PROGRAM = 'visplay-native';

export function formatError(e: unknown, debug: boolean): string {
  if (e instanceof VisplayError) return `${PROGRAM}: ${e.message}`;
  if (e instanceof Error) {
    const line = `${PROGRAM}: unexpected error: ${e.message}`;
    return debug ? `${line}\n${e.stack ?? ''}` : `${line} (set VISPLAY_DEBUG=1 to see where)`;
  }
  return `${PROGRAM}: unexpected error: ${String(e)}`;
}
