/** Header on a replica's refusal of a write (and of a read before its first sync): the primary's HOST:PORT. */
export const PRIMARY_HEADER = "ripplecache-primary";
