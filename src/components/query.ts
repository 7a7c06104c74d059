// The one place components meet the q_ query language (src/query/): parsed once per request,
// evaluated in memory against each component's attribute values.
import { QueryInvalid } from '../query/language.ts';

export { matches, parseQuery, type Query } from '../query/index.ts';
/** Text as the index stores it (NUL as U+FFFD: PostgreSQL text cannot hold NUL), for names and versions too. */
export { indexable as storedText } from '../query/attributes.ts';

/** The error for a query, constraint or parameter no item can satisfy, or a malformed one. */
export function queryError(message: string): QueryInvalid {
  return new QueryInvalid(message);
}
