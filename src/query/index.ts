// Queries over manifests: the language, the attributes they see, and order keys.
export { COMPARISONS, appliedFilters, conditionHolds, hasQuery, matches, parseQuery, type Comparison, type Condition, type Query, type Sort } from './language.ts';
export { LISTED_TYPE, manifestAttributes, PATH_SEPARATOR, type Attribute } from './attributes.ts';
export { compareVersions, isVersion, orderKey } from './order.ts';
