/*
 * Unit tests for slab: slots are zeroed, distinct and aligned; a freed
 * slot is reused first; blocks are mapped as slots are needed and given
 * back when wholly free (one kept); short strings go to a slot, long ones
 * to malloc, and both are freed by slab_strfree; a block that cannot be
 * mapped gives NULL. Under ASan (make san) the
 * slab is plain calloc/free and only what holds in both is checked.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "slab.h"

#if defined(__SANITIZE_ADDRESS__)
#define TEST_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TEST_ASAN 1
#endif
#endif

#define N_OBJS 5000 /* several blocks of 624-byte slots */

static void test_slots_zeroed_distinct_aligned(void **state)
{
	struct slab sl;
	slab_init(&sl, 617);
	assert_int_equal(sl.slot, 624);
	unsigned char **p = calloc(N_OBJS, sizeof *p);
	assert_non_null(p);
	for (size_t i = 0; i < N_OBJS; i++) {
		p[i] = slab_alloc(&sl);
		assert_non_null(p[i]);
		assert_int_equal((uintptr_t)p[i] % 16, 0);
		for (size_t k = 0; k < sl.slot; k++)
			assert_int_equal(p[i][k], 0);
		memset(p[i], (int)(i & 0xff) | 1, sl.slot); /* dirty it */
	}
	/* No two overlap: each still holds its own byte. */
	for (size_t i = 0; i < N_OBJS; i++)
		for (size_t k = 0; k < sl.slot; k += 97)
			assert_int_equal(p[i][k], (int)(i & 0xff) | 1);
	/* Freed and allocated again: zeroed, though they were dirty. */
	for (size_t i = 0; i < N_OBJS; i += 2)
		slab_free(&sl, p[i]);
	for (size_t i = 0; i < N_OBJS; i += 2) {
		p[i] = slab_alloc(&sl);
		assert_non_null(p[i]);
		for (size_t k = 0; k < sl.slot; k++)
			assert_int_equal(p[i][k], 0);
	}
	for (size_t i = 0; i < N_OBJS; i++)
		slab_free(&sl, p[i]);
	slab_free(&sl, NULL);
	free(p);
}

static void test_blocks_reused_and_given_back(void **state)
{
#ifdef TEST_ASAN
	skip();
#else
	struct slab sl;
	slab_init(&sl, 600);
	assert_int_equal(slab_blocks(&sl), 0);
	void *a = slab_alloc(&sl);
	assert_int_equal(slab_blocks(&sl), 1);
	slab_free(&sl, a);
	/* The freed slot comes back first; the empty block was kept. */
	assert_int_equal(slab_blocks(&sl), 1);
	assert_ptr_equal(slab_alloc(&sl), a);

	void **p = calloc(N_OBJS, sizeof *p);
	assert_non_null(p);
	p[0] = a;
	for (size_t i = 1; i < N_OBJS; i++)
		assert_non_null(p[i] = slab_alloc(&sl));
	size_t need = (N_OBJS + sl.per_block - 1) / sl.per_block;
	assert_int_equal(slab_blocks(&sl), need);
	/* Slots share a block only with their neighbours. */
	assert_true((uintptr_t)p[1] / SLAB_BLOCK_SIZE == (uintptr_t)p[0] / SLAB_BLOCK_SIZE);
	/* Every second one freed: no block is wholly free, none given back. */
	for (size_t i = 0; i < N_OBJS; i += 2)
		slab_free(&sl, p[i]);
	assert_int_equal(slab_blocks(&sl), need);
	/* The rest freed: every block but one given back. */
	for (size_t i = 1; i < N_OBJS; i += 2)
		slab_free(&sl, p[i]);
	assert_int_equal(slab_blocks(&sl), 1);
	/* Allocating again fills the kept block before mapping another. */
	for (size_t i = 0; i < sl.per_block; i++)
		assert_non_null(p[i] = slab_alloc(&sl));
	assert_int_equal(slab_blocks(&sl), 1);
	assert_non_null(p[sl.per_block] = slab_alloc(&sl));
	assert_int_equal(slab_blocks(&sl), 2);
	for (size_t i = 0; i <= sl.per_block; i++)
		slab_free(&sl, p[i]);
	assert_int_equal(slab_blocks(&sl), 1);
	free(p);
#endif
}

static void test_too_big_for_a_block(void **state)
{
	struct slab sl;
	slab_init(&sl, SLAB_BLOCK_SIZE);
	assert_int_equal(sl.per_block, 0);
#ifndef TEST_ASAN
	assert_null(slab_alloc(&sl));
#endif
}

/* No block can be mapped (the address space limited to what the process
 * has): NULL, not a crash; the slot already handed out is still good. In
 * a child, so that the limit does not outlive the test. */
static void test_out_of_memory(void **state)
{
#ifdef TEST_ASAN
	skip(); /* ASan needs its address space; the slab is calloc there */
#else
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct slab sl;
		slab_init(&sl, 600);
		char *first = slab_alloc(&sl);
		for (size_t i = 1; i < sl.per_block; i++) /* the block full */
			if (!slab_alloc(&sl))
				_exit(2);
		unsigned long pages = 0;
		FILE *f = fopen("/proc/self/statm", "r");
		if (!f || fscanf(f, "%lu", &pages) != 1)
			_exit(3);
		fclose(f);
		struct rlimit rl = { .rlim_cur = pages * (unsigned long)sysconf(_SC_PAGESIZE) + 4096,
				     .rlim_max = RLIM_INFINITY };
		if (!first || setrlimit(RLIMIT_AS, &rl) != 0)
			_exit(4);
		if (slab_alloc(&sl) != NULL)
			_exit(5);
		memset(first, 1, sl.slot);
		slab_free(&sl, first);
		_exit(0);
	}
	int status = 0;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
#endif
}

static void test_strings(void **state)
{
	struct slab sl;
	slab_init(&sl, 48);
	char *a = slab_strndup(&sl, "mail.example.com trailing", 16);
	assert_non_null(a);
	assert_string_equal(a, "mail.example.com");
	char fits[47], over[48];
	memset(fits, 'f', sizeof fits);
	memset(over, 'o', sizeof over);
	char *b = slab_strndup(&sl, fits, 46); /* tag + 46 + NUL = 48: a slot */
	char *c = slab_strndup(&sl, over, 47); /* one more: malloc */
	char *e = slab_strndup(&sl, "", 0);
	assert_non_null(b);
	assert_non_null(c);
	assert_non_null(e);
	assert_int_equal(strlen(b), 46);
	assert_int_equal(strlen(c), 47);
	assert_string_equal(e, "");
	assert_memory_equal(c, over, 47);
#ifndef TEST_ASAN
	/* a, b and e in the same block, c not in a slab block. */
	assert_int_equal(slab_blocks(&sl), 1);
	uintptr_t blk = (uintptr_t)a & ~(uintptr_t)(SLAB_BLOCK_SIZE - 1);
	assert_true(((uintptr_t)b & ~(uintptr_t)(SLAB_BLOCK_SIZE - 1)) == blk);
#endif
	slab_strfree(&sl, a);
	slab_strfree(&sl, b);
	slab_strfree(&sl, c);
	slab_strfree(&sl, e);
	slab_strfree(&sl, NULL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_slots_zeroed_distinct_aligned),
		cmocka_unit_test(test_blocks_reused_and_given_back),
		cmocka_unit_test(test_too_big_for_a_block),
		cmocka_unit_test(test_out_of_memory),
		cmocka_unit_test(test_strings),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
