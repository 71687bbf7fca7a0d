// ggml tensor types: id -> (name, block size, bytes per block), as in ggml.c's `type_traits`.
//
// A tensor of type t with shape (ne0, ne1, ne2, ne3) takes ne0/blockSize * typeSize * ne1*ne2*ne3
// bytes, and ne0 must be a multiple of blockSize. The numbers below were printed by
// ggml_get_type_traits() from the vendored llama.cpp; ids with no entry were removed from ggml
// (4, 5: Q4_2/Q4_3; 31-33, 36-38: repacked layouts that never belong in a GGUF file).

export interface GgmlType {
  readonly id: number;
  readonly name: string;
  /** Elements per block. */
  readonly blockSize: number;
  /** Bytes per block. */
  readonly typeSize: number;
}

const QK_K = 256; // super-block size of the k-quants and i-quants

const TYPES: readonly GgmlType[] = [
  { id: 0, name: 'F32', blockSize: 1, typeSize: 4 },
  { id: 1, name: 'F16', blockSize: 1, typeSize: 2 },
  { id: 2, name: 'Q4_0', blockSize: 32, typeSize: 18 },
  { id: 3, name: 'Q4_1', blockSize: 32, typeSize: 20 },
  { id: 6, name: 'Q5_0', blockSize: 32, typeSize: 22 },
  { id: 7, name: 'Q5_1', blockSize: 32, typeSize: 24 },
  { id: 8, name: 'Q8_0', blockSize: 32, typeSize: 34 },
  { id: 9, name: 'Q8_1', blockSize: 32, typeSize: 36 },
  { id: 10, name: 'Q2_K', blockSize: QK_K, typeSize: 84 },
  { id: 11, name: 'Q3_K', blockSize: QK_K, typeSize: 110 },
  { id: 12, name: 'Q4_K', blockSize: QK_K, typeSize: 144 },
  { id: 13, name: 'Q5_K', blockSize: QK_K, typeSize: 176 },
  { id: 14, name: 'Q6_K', blockSize: QK_K, typeSize: 210 },
  { id: 15, name: 'Q8_K', blockSize: QK_K, typeSize: 292 },
  { id: 16, name: 'IQ2_XXS', blockSize: QK_K, typeSize: 66 },
  { id: 17, name: 'IQ2_XS', blockSize: QK_K, typeSize: 74 },
  { id: 18, name: 'IQ3_XXS', blockSize: QK_K, typeSize: 98 },
  { id: 19, name: 'IQ1_S', blockSize: QK_K, typeSize: 50 },
  { id: 20, name: 'IQ4_NL', blockSize: 32, typeSize: 18 },
  { id: 21, name: 'IQ3_S', blockSize: QK_K, typeSize: 110 },
  { id: 22, name: 'IQ2_S', blockSize: QK_K, typeSize: 82 },
  { id: 23, name: 'IQ4_XS', blockSize: QK_K, typeSize: 136 },
  { id: 24, name: 'I8', blockSize: 1, typeSize: 1 },
  { id: 25, name: 'I16', blockSize: 1, typeSize: 2 },
  { id: 26, name: 'I32', blockSize: 1, typeSize: 4 },
  { id: 27, name: 'I64', blockSize: 1, typeSize: 8 },
  { id: 28, name: 'F64', blockSize: 1, typeSize: 8 },
  { id: 29, name: 'IQ1_M', blockSize: QK_K, typeSize: 56 },
  { id: 30, name: 'BF16', blockSize: 1, typeSize: 2 },
  { id: 34, name: 'TQ1_0', blockSize: QK_K, typeSize: 54 },
  { id: 35, name: 'TQ2_0', blockSize: QK_K, typeSize: 66 },
  { id: 39, name: 'MXFP4', blockSize: 32, typeSize: 17 },
  { id: 40, name: 'NVFP4', blockSize: 64, typeSize: 36 },
  { id: 41, name: 'Q1_0', blockSize: 128, typeSize: 18 },
  { id: 42, name: 'Q2_0', blockSize: 64, typeSize: 18 },
];

const BY_ID: ReadonlyMap<number, GgmlType> = new Map(TYPES.map((t) => [t.id, t]));
const BY_NAME: ReadonlyMap<string, GgmlType> = new Map(TYPES.map((t) => [t.name, t]));

/** The type with this id, or undefined for ids ggml does not (or no longer) define. */
export function ggmlType(id: number): GgmlType | undefined {
  return BY_ID.get(id);
}

export function ggmlTypeByName(name: string): GgmlType | undefined {
  return BY_NAME.get(name.toUpperCase());
}
