/*
 * slab: objects of one size in mapped blocks of their own (see slab.h).
 * Exports slab_init, slab_alloc, slab_free, slab_strndup, slab_strfree,
 * slab_blocks.
 */
#include "slab.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#if defined(__SANITIZE_ADDRESS__)
#define SLAB_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SLAB_ASAN 1
#endif
#endif

#define SLAB_ALIGN 16
#define SLAB_TAG_SLOT 1 /* slab_strndup: the string is in a slot */
#define SLAB_TAG_HEAP 0 /* ... from malloc */

/* At the start of each block; the slots follow it. */
struct slab_block {
	struct slab_block *next, *prev; /* on the partial list */
	void *free;                     /* freed slots, linked through their first word */
	size_t used;                    /* slots handed out */
	size_t touched;                 /* slots ever handed out: the rest is untouched */
};

#define SLAB_HEADER (((sizeof(struct slab_block)) + SLAB_ALIGN - 1) & ~(size_t)(SLAB_ALIGN - 1))

void slab_init(struct slab *sl, size_t size)
{
	memset(sl, 0, sizeof *sl);
	if (size < sizeof(void *))
		size = sizeof(void *);
	sl->slot = (size + SLAB_ALIGN - 1) & ~(size_t)(SLAB_ALIGN - 1);
	sl->per_block = sl->slot <= SLAB_BLOCK_SIZE - SLAB_HEADER
				? (SLAB_BLOCK_SIZE - SLAB_HEADER) / sl->slot
				: 0;
}

size_t slab_blocks(const struct slab *sl)
{
	return sl->blocks;
}

#ifdef SLAB_ASAN

void *slab_alloc(struct slab *sl)
{
	return calloc(1, sl->slot);
}

void slab_free(struct slab *sl, void *p)
{
	free(p);
}

#else

static void slab_link(struct slab *sl, struct slab_block *b)
{
	b->prev = NULL;
	b->next = sl->partial;
	if (sl->partial)
		sl->partial->prev = b;
	sl->partial = b;
}

static void slab_unlink(struct slab *sl, struct slab_block *b)
{
	if (b->prev)
		b->prev->next = b->next;
	else
		sl->partial = b->next;
	if (b->next)
		b->next->prev = b->prev;
	b->next = b->prev = NULL;
}

/* A new block aligned to its size: twice the size mapped, the slack on
 * either side unmapped (untouched, so never resident). */
static struct slab_block *slab_block_new(struct slab *sl)
{
	size_t len = 2 * SLAB_BLOCK_SIZE;
	char *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (m == MAP_FAILED)
		return NULL;
	uintptr_t a = ((uintptr_t)m + SLAB_BLOCK_SIZE - 1) & ~(uintptr_t)(SLAB_BLOCK_SIZE - 1);
	char *start = (char *)a;
	if (start > m)
		munmap(m, (size_t)(start - m));
	if (start + SLAB_BLOCK_SIZE < m + len)
		munmap(start + SLAB_BLOCK_SIZE, (size_t)(m + len - (start + SLAB_BLOCK_SIZE)));
	struct slab_block *b = (struct slab_block *)start; /* zero: fresh mapping */
	sl->blocks++;
	sl->empty++;
	slab_link(sl, b);
	return b;
}

void *slab_alloc(struct slab *sl)
{
	if (sl->per_block == 0)
		return NULL;
	struct slab_block *b = sl->partial;
	if (!b && !(b = slab_block_new(sl)))
		return NULL;
	char *p;
	if (b->free) {
		p = b->free;
		b->free = *(void **)p;
	} else {
		p = (char *)b + SLAB_HEADER + b->touched * sl->slot;
		b->touched++;
	}
	if (b->used++ == 0)
		sl->empty--;
	if (b->used == sl->per_block)
		slab_unlink(sl, b);
	memset(p, 0, sl->slot);
	return p;
}

void slab_free(struct slab *sl, void *p)
{
	if (!p)
		return;
	struct slab_block *b =
		(struct slab_block *)((uintptr_t)p & ~(uintptr_t)(SLAB_BLOCK_SIZE - 1));
	if (b->used == sl->per_block)
		slab_link(sl, b); /* was full */
	*(void **)p = b->free;
	b->free = p;
	if (--b->used > 0)
		return;
	if (sl->empty == 0) {
		sl->empty++; /* kept for the next allocation */
		return;
	}
	slab_unlink(sl, b);
	munmap(b, SLAB_BLOCK_SIZE);
	sl->blocks--;
}

#endif

char *slab_strndup(struct slab *sl, const char *p, size_t len)
{
	char *t;
	if (len + 2 <= sl->slot) {
		if (!(t = slab_alloc(sl)))
			return NULL;
		t[0] = SLAB_TAG_SLOT;
	} else {
		if (len > SIZE_MAX - 2 || !(t = malloc(len + 2)))
			return NULL;
		t[0] = SLAB_TAG_HEAP;
	}
	memcpy(t + 1, p, len);
	t[1 + len] = '\0';
	return t + 1;
}

void slab_strfree(struct slab *sl, char *s)
{
	if (!s)
		return;
	char *t = s - 1;
	if (t[0] == SLAB_TAG_SLOT)
		slab_free(sl, t);
	else
		free(t);
}
