/*
 * slab: objects of one size in blocks of their own, away from the heap.
 *
 * What it is for (BENCHMARKS.md, "What a session allocates, and when"):
 * objects that live as long as a session (the session, its event, its
 * short names) allocated from malloc's heap end up between the transient
 * ones (a bufferevent and its chains, held for about a second while the
 * session is busy), so that after a crowd of arrivals every page of the
 * heap's peak keeps a few live objects and stays resident. In blocks of
 * their own they are packed together, and the heap's free top can be
 * given back.
 *
 * A block is SLAB_BLOCK_SIZE bytes, mapped on demand and aligned to its
 * size (a slot finds its block by masking its address). Slots are handed
 * out from a block's free list, then from its untouched tail (whose pages
 * are not resident until used); a freed slot is reused first. A block
 * whose slots are all free is unmapped, except one kept for the next
 * allocation (a session coming and going does not map and unmap a block
 * each time). Blocks with free slots are on one list, most recently freed
 * first.
 *
 * Under AddressSanitizer (make san) every slot is a plain calloc and free:
 * ASan then sees each allocation and use after free, and LeakSanitizer
 * scans the objects (it does not scan mapped blocks, so anything malloc'ed
 * and reachable only from a slot would look leaked).
 *
 * Owned by its caller: a plain struct, set up by slab_init; one thread.
 * Exports slab_init, slab_alloc, slab_free, slab_strndup, slab_strfree,
 * slab_blocks.
 */
#ifndef SLUICE_SLAB_H
#define SLUICE_SLAB_H

#include <stddef.h>

#define SLAB_BLOCK_SIZE ((size_t)64 * 1024)

struct slab_block;

struct slab {
	size_t slot;                /* bytes a slot, a multiple of 16 */
	size_t per_block;           /* slots a block */
	struct slab_block *partial; /* blocks with a free slot */
	size_t blocks;              /* mapped */
	size_t empty;               /* mapped with no slot in use (0 or 1) */
};

/* Slots of size bytes (at least a pointer, at most what a block holds). */
void slab_init(struct slab *sl, size_t size);
/* A zeroed slot; NULL when no block can be mapped (out of memory). */
void *slab_alloc(struct slab *sl);
/* p from slab_alloc on sl, or NULL. */
void slab_free(struct slab *sl, void *p);
/* A copy of p[0..len) with a NUL after it: in a slot of sl when it fits
 * (len + 2 <= sl->slot: a tag byte before the string says where it is),
 * from malloc otherwise. NULL when out of memory. Free with slab_strfree
 * on the same sl, never with free(). */
char *slab_strndup(struct slab *sl, const char *p, size_t len);
void slab_strfree(struct slab *sl, char *s);
/* Blocks mapped now (the unit test; 0 under ASan). */
size_t slab_blocks(const struct slab *sl);

#endif
