// The synthetic world with known truth (issue 7): scenes of coloured shapes, questions whose answers
// follow from the scene model, and the three disjoint splits written as PNGs plus JSONL.
export {
  BACKGROUND_RGB, COLOURS, COLOUR_RGB, DEFAULT_CLUTTER, SOLID_MIN_PIXELS, DEFAULT_SCENE_SIZE, MAX_TARGET_COUNT, MIN_VISIBLE, REFERENCE_SIZE, SHAPES, SHAPE_EXTENT,
  SIZES, SIZE_RADIUS, Rng, deriveSeed, extent, hexColour, insideGeometry, makeScene, objectGeometry, rasterizeScene, renderScene, resolveSceneOptions,
  sceneHash, sceneSvg,
  type Colour, type Geometry, type ResolvedSceneOptions, type Rgb, type Scene, type SceneObject, type SceneOptions, type SceneRaster, type Shape,
  type SizeName,
} from './generator.js';
export {
  FAMILIES, OPTION_COUNT, RELATIONS, SPATIAL_MARGIN, benchType, formatQuestion, makeItem, makeQuestion, matching, planFor, relationOffset,
  sceneOptionsFor,
  type QuestionFamily, type QuestionPlan, type Relation, type WorldItem, type WorldQuestion,
} from './questions.js';
export {
  DEFAULT_WORLD, SPLITS, WORLD_VERSION, balance, benchLine, generateWorld, imagePath, resolveWorldOptions, writeWorld,
  type PoolImage, type ResolvedWorldOptions, type SplitName, type World, type WorldManifest, type WorldOptions, type WriteWorldOptions,
} from './splits.js';
