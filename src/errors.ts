// The one error type of the package. Every failure a user can act on is a VisplayError with a stable
// `code`, so callers branch on codes and the CLI prints the message alone, never a stack trace.
//
// Native errors cross the N-API boundary as plain Errors whose message starts with the code in
// brackets ("[ERR_MODEL_LOAD] failed to load model: ..."); `fromNative` turns them back into
// VisplayErrors. Like sharp, it gives them the stack of the JS caller, recorded before the async
// hop, so a failure points at the user's line rather than into the addon's worker.

export type VisplayErrorCode =
  // the addon
  | 'ERR_ADDON_MISSING'
  | 'ERR_ADDON_LOAD'
  // arguments and files
  | 'ERR_INVALID_ARG'
  | 'ERR_FILE_NOT_FOUND'
  // GGUF model files
  | 'ERR_NOT_GGUF'
  | 'ERR_GGUF_TRUNCATED'
  | 'ERR_GGUF_CORRUPT'
  | 'ERR_GGUF_UNSUPPORTED'
  | 'ERR_NOT_VLM'
  | 'ERR_MMPROJ_MISMATCH'
  // images
  | 'ERR_IMAGE_DECODE'
  | 'ERR_IMAGE_EMPTY'
  // generation
  | 'ERR_PROMPT_TOO_LONG'
  | 'ERR_DISPOSED'
  | 'ERR_BUSY'
  | 'ERR_MODEL_LOAD'
  | 'ERR_DECODE'
  | 'ERR_NATIVE'
  | 'ERR_OUTPUT'
  // training
  | 'ERR_UNSUPPORTED_MODEL'
  | 'ERR_CHECKPOINT'
  | 'ERR_COMPUTE'
  | 'ERR_OUT_OF_MEMORY'
  | 'ERR_INTERNAL'
  | 'ERR_GPU_WEIGHTS'
  // evaluation
  | 'ERR_JUDGE';

/** Every code, for parsing native messages and for exhaustive tests. */
export const VISPLAY_ERROR_CODES: readonly VisplayErrorCode[] = [
  'ERR_ADDON_MISSING', 'ERR_ADDON_LOAD', 'ERR_INVALID_ARG', 'ERR_FILE_NOT_FOUND', 'ERR_NOT_GGUF',
  'ERR_GGUF_TRUNCATED', 'ERR_GGUF_CORRUPT', 'ERR_GGUF_UNSUPPORTED', 'ERR_NOT_VLM', 'ERR_MMPROJ_MISMATCH',
  'ERR_IMAGE_DECODE', 'ERR_IMAGE_EMPTY', 'ERR_PROMPT_TOO_LONG', 'ERR_DISPOSED', 'ERR_BUSY',
  'ERR_MODEL_LOAD', 'ERR_DECODE', 'ERR_NATIVE', 'ERR_OUTPUT',
  'ERR_UNSUPPORTED_MODEL', 'ERR_CHECKPOINT', 'ERR_COMPUTE', 'ERR_OUT_OF_MEMORY', 'ERR_INTERNAL',
  'ERR_GPU_WEIGHTS', 'ERR_JUDGE',
];

const KNOWN_CODES: ReadonlySet<string> = new Set(VISPLAY_ERROR_CODES);

export function isVisplayErrorCode(value: string): value is VisplayErrorCode {
  return KNOWN_CODES.has(value);
}

export class VisplayError extends Error {
  readonly code: VisplayErrorCode;

  constructor(code: VisplayErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
  }
}

// On the prototype (not a class field) so the name is already in place when Error's constructor
// formats the first line of the stack: "VisplayError: ..." rather than "Error: ...".
Object.defineProperty(VisplayError.prototype, 'name', {
  value: 'VisplayError', writable: true, enumerable: false, configurable: true,
});

export function isVisplayError(e: unknown, code?: VisplayErrorCode): e is VisplayError {
  return e instanceof VisplayError && (code === undefined || e.code === code);
}

/** "[ERR_SOMETHING] rest of message" as the addon formats it. */
const NATIVE_MESSAGE = /^\[([A-Z0-9_]+)\]\s*([\s\S]*)$/;

/**
 * Converts whatever the addon threw into a VisplayError.
 *
 * `callerStack` is `new Error().stack` taken in the caller before it awaited the native promise (see
 * `captureCallerStack`); its frames replace the useless ones of the worker thread's completion.
 * A VisplayError passes through unchanged. An unknown bracketed code keeps its full text under
 * ERR_NATIVE, so nothing the addon said is lost.
 */
export function fromNative(e: unknown, callerStack?: string): VisplayError {
  if (e instanceof VisplayError) return e;
  const text = e instanceof Error ? e.message : String(e);
  const match = NATIVE_MESSAGE.exec(text);
  let code: VisplayErrorCode = 'ERR_NATIVE';
  let message = text;
  const ownCode = (e as { code?: unknown } | null)?.code;
  if (match && isVisplayErrorCode(match[1]!)) {
    code = match[1];
    message = match[2]!;
  } else if (typeof ownCode === 'string' && isVisplayErrorCode(ownCode)) {
    // Napi::Error with a `code` property set instead of the bracket prefix.
    code = ownCode;
  }
  const error = new VisplayError(code, message, { cause: e });
  if (callerStack !== undefined) {
    error.stack = `${error.name}: ${message}\n${stackFrames(callerStack)}`;
  }
  return error;
}

/**
 * The caller's stack frames, to hand to `fromNative` after an async hop. `skipFrames` drops that
 * many further frames, for helpers that capture on behalf of their own caller.
 */
export function captureCallerStack(skipFrames = 0): string {
  // The first frame is this function itself; the stack should start at whoever asked for it.
  return stackFrames(new Error().stack ?? '').split('\n').slice(1 + skipFrames).join('\n');
}

/**
 * Runs a native call (sync or async) and converts anything it throws with `fromNative`, keeping the
 * stack of the code that called `callNative`.
 */
export async function callNative<T>(call: () => T | Promise<T>): Promise<T> {
  // Captured synchronously, before the first await, so the caller's frames are still on the stack.
  const stack = captureCallerStack(1);
  try {
    return await call();
  } catch (e) {
    throw fromNative(e, stack);
  }
}

/** The "    at ..." lines of a stack, without the "Name: message" header (which may span lines). */
function stackFrames(stack: string): string {
  const lines = stack.split('\n');
  const first = lines.findIndex((line) => /^\s+at /.test(line));
  return first === -1 ? '' : lines.slice(first).join('\n');
}
