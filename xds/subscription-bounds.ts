/**
 * Resource names one stream may hold subscribed per type (served or not). Every subscribed name is
 * state the server keeps, and walks on each snapshot change, for as long as the stream lives; a
 * real node names one resource per cluster or route at most, which stays in the tens of thousands
 * even in large meshes.
 */
export const MAX_SUBSCRIBED_NAMES = 100_000;

/**
 * Characters in one subscribed resource name. Without it the count above would bound nothing: one
 * name could be as large as a whole request. Far longer than real names (cluster and service names,
 * `xdstp://` URLs).
 */
export const MAX_RESOURCE_NAME_LENGTH = 1_024;
