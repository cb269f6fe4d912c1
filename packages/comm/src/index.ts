/**
 * @x/comm — process groups: gloo (CPU) and NCCL (GPU), rendezvous store, launcher; every op takes an explicit stream.
 *
 * Not built yet. This package deliberately exports nothing: a package whose capability is not
 * built yet exports nothing it cannot do, so no stub can pretend to work. See README.md.
 */
export {};
