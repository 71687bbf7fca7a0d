// Turns the fs errors of opening a user-named file into one readable VisplayError, shared by the GGUF
// reader and the image loader, so "does not exist" reads the same wherever a path came from.
import { VisplayError } from './errors.js';

/**
 * How a file is named in messages: its role, the path, and the option it came from, e.g.
 * "model file models/q.gguf (--model)". Users act on the option name, so it is worth the words.
 */
export function describeFile(path: string, role = 'file', option?: string): string {
  return option ? `${role} ${path} (${option})` : `${role} ${path}`;
}

/** Maps an fs error (from open, stat or readFile) on the file described by `subject`. */
export function fileError(e: unknown, subject: string): VisplayError {
  const code = (e as NodeJS.ErrnoException | undefined)?.code;
  switch (code) {
    case 'ENOENT':
      return new VisplayError('ERR_FILE_NOT_FOUND', `${subject} does not exist`, { cause: e });
    case 'ENOTDIR':
      return new VisplayError('ERR_FILE_NOT_FOUND', `${subject} does not exist (a part of the path is not a folder)`, { cause: e });
    case 'EISDIR':
      return new VisplayError('ERR_FILE_NOT_FOUND', `${subject} is a folder, not a file`, { cause: e });
    case 'EACCES':
    case 'EPERM':
      return new VisplayError('ERR_FILE_NOT_FOUND', `${subject} cannot be read (permission denied)`, { cause: e });
    default:
      return new VisplayError('ERR_FILE_NOT_FOUND',
        `${subject} cannot be read: ${(e as Error | undefined)?.message ?? String(e)}`, { cause: e });
  }
}
