/** Header on a replica's refusal of a write (and of a read before its first sync): the primary's HOST:PORT. */
export const PRIMARY_HEADER = "ripplecache-primary";

/**
 * Header on a refusal that applied nothing and may succeed elsewhere or later (a write while no
 * node holds the lease): clients may retry it without risk of applying it twice.
 */
export const NOT_APPLIED_HEADER = "ripplecache-not-applied";
