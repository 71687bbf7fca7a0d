// The Questioner's output format and the rules that keep or drop a labelled candidate, as the
// official code applies them (VISPLAY.md §2 step 4 and §3).

export interface ParsedQuestion {
  /** The output parsed and has a question, an answer and a type: it is sent to the Reasoner. */
  valid: boolean;
  type: string;
  /** '' when invalid because the output does not parse. */
  question: string;
  /** The Questioner's own answer (never used as a label). */
  answer: string;
}

/** cot_val.py's pattern, DOTALL: the three tags in order, anything around and between them. */
const QUESTION_FORMAT = /<type>([\s\S]*?)<\/type>[\s\S]*?<question>([\s\S]*?)<\/question>[\s\S]*?<answer>([\s\S]*?)<\/answer>/;

/**
 * Parses a Questioner output as the reward code does: whitespace around '<', '>' and '/' is removed
 * first (for models that write "< type >"; it also joins "km / h" to "km/h" inside the text, as
 * there), then the first match of the three tags is taken, each field trimmed.
 *
 * Valid means what gets the uncertainty reward in the official code: the output matched and
 * question, answer and type are all non-empty (the reward server sends a question to the Reasoner
 * only `if q and a and t`; any other scores -1). An output that matches with an empty field keeps its
 * fields (its question text still joins the diversity clustering, as there) but is invalid.
 */
export function parseQuestion(output: string): ParsedQuestion {
  const cleaned = output.replace(/\s*([<>/])\s*/g, '$1');
  const m = QUESTION_FORMAT.exec(cleaned);
  if (!m) return { valid: false, type: '', question: '', answer: '' };
  const type = m[1]!.trim();
  const question = m[2]!.trim();
  const answer = m[3]!.trim();
  return { valid: type !== '' && question !== '' && answer !== '', type, question, answer };
}

/** The official selection band: keep candidates with 0.3 <= confidence <= 0.8 (VISPLAY.md §3). */
export const DEFAULT_BAND: readonly [number, number] = [0.3, 0.8];

/**
 * Why a labelled candidate is dropped, or null if it is kept. The official rules (evaluate.py,
 * upload.py): no silver answer ('' or mathruler's "None"), a question that mentions "box" (any case;
 * also "boxes") or contains "证明" (asks for a proof), a silver answer containing "text" (any case;
 * LaTeX \text{} residue), a confidence outside the band (bounds included).
 */
export function candidateDropReason(
  candidate: { question: string; silver: string; confidence: number },
  band: readonly [number, number] = DEFAULT_BAND,
): string | null {
  const { question, silver, confidence } = candidate;
  if (silver === '') return 'no boxed answer to vote on';
  if (silver === 'None') return 'the silver answer is "None"';
  if (question.toLowerCase().includes('box')) return 'the question mentions "box"';
  if (question.includes('证明')) return 'the question asks for a proof (证明)';
  if (silver.toLowerCase().includes('text')) return 'the silver answer contains "text"';
  if (!(confidence >= band[0] && confidence <= band[1])) return `confidence ${confidence} is outside [${band[0]}, ${band[1]}]`;
  return null;
}
