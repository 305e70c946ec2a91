/* Unit tests of src/kvm/guest_mem: the layout around the MMIO hole and the checked accessor
 * gpa_to_hva() at every edge a guest can reach (region ends, the hole, 64-bit overflow). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kvm/guest_mem.h"

#define MiB (1ULL << 20)
#define GiB (1ULL << 30)

static void test_layout_small_and_split(void **state)
{
    struct guest_mem mem;
    assert_int_equal(guest_mem_layout(&mem, 128 * MiB, NULL), 0);
    assert_int_equal(mem.nr_regions, 1);
    assert_true(guest_mem_low_end(&mem) == 128 * MiB);
    assert_int_equal(guest_mem_layout(&mem, 5 * GiB, NULL), 0);
    assert_int_equal(mem.nr_regions, 2);
    assert_true(mem.regions[0].size == GUEST_MMIO_HOLE_START);
    assert_true(mem.regions[1].gpa == GUEST_MMIO_HOLE_END);
    assert_true(mem.regions[1].size == 5 * GiB - GUEST_MMIO_HOLE_START);
    assert_true(mem.total == 5 * GiB);
    /* exactly the hole start: no second region */
    assert_int_equal(guest_mem_layout(&mem, GUEST_MMIO_HOLE_START, NULL), 0);
    assert_int_equal(mem.nr_regions, 1);
}

static void test_layout_rejects(void **state)
{
    struct guest_mem mem;
    struct wisp_err err = {0};
    assert_int_equal(guest_mem_layout(&mem, 0, &err), -EINVAL);
    assert_int_equal(guest_mem_layout(&mem, 4096 + 1, &err), -EINVAL);
    assert_int_equal(guest_mem_layout(&mem, GUEST_MEM_MAX_BYTES + 4096, &err), -ERANGE);
    assert_non_null(strstr(err.msg, "exceeds"));
}

static void test_gpa_to_hva_single_region(void **state)
{
    struct guest_mem mem;
    assert_int_equal(guest_mem_create(&mem, 128 * MiB, NULL), 0);
    uint8_t *base = mem.regions[0].hva;
    assert_ptr_equal(gpa_to_hva(&mem, 0, 128 * MiB), base);
    assert_ptr_equal(gpa_to_hva(&mem, 128 * MiB - 1, 1), base + 128 * MiB - 1);
    assert_null(gpa_to_hva(&mem, 128 * MiB - 1, 2));
    assert_null(gpa_to_hva(&mem, 128 * MiB, 1));
    assert_null(gpa_to_hva(&mem, 0, 128 * MiB + 1));
    /* len 0 at the very end is valid (an empty range), beyond it is not */
    assert_ptr_equal(gpa_to_hva(&mem, 128 * MiB, 0), base + 128 * MiB);
    assert_null(gpa_to_hva(&mem, 128 * MiB + 1, 0));
    /* 64-bit overflow of gpa + len must not wrap into RAM */
    assert_null(gpa_to_hva(&mem, UINT64_MAX, 1));
    assert_null(gpa_to_hva(&mem, 1, UINT64_MAX));
    assert_null(gpa_to_hva(&mem, UINT64_MAX, UINT64_MAX));
    assert_null(gpa_to_hva(&mem, 0x1000, UINT64_MAX - 0xfff));
    assert_null(gpa_to_hva(&mem, UINT64_MAX - 0xfff, 0x1000));
    guest_mem_destroy(&mem);
    assert_null(gpa_to_hva(&mem, 0, 1)); /* destroyed: nothing is reachable */
}

static void test_gpa_to_hva_hole(void **state)
{
    struct guest_mem mem;
    assert_int_equal(guest_mem_create(&mem, 5 * GiB, NULL), 0); /* MAP_NORESERVE: no RSS */
    uint64_t hole = GUEST_MMIO_HOLE_START, high = GUEST_MMIO_HOLE_END;
    assert_non_null(gpa_to_hva(&mem, hole - 4, 4));
    assert_null(gpa_to_hva(&mem, hole - 4, 8));               /* runs into the hole */
    assert_null(gpa_to_hva(&mem, hole, 1));                   /* the hole itself */
    assert_null(gpa_to_hva(&mem, 0xfee00000, 4));             /* LAPIC page */
    assert_null(gpa_to_hva(&mem, hole - 1, high - hole + 2)); /* spans the hole */
    assert_ptr_equal(gpa_to_hva(&mem, high, 1), mem.regions[1].hva);
    uint64_t end = high + mem.regions[1].size;
    assert_non_null(gpa_to_hva(&mem, end - 8, 8));
    assert_null(gpa_to_hva(&mem, end - 8, 9));
    assert_null(gpa_to_hva(&mem, end, 1));
    /* copies go through the same check */
    uint64_t v = 0x1122334455667788ULL, r = 0;
    assert_int_equal(guest_mem_write(&mem, high + 0x1000, &v, sizeof(v)), 0);
    assert_int_equal(guest_mem_read(&mem, high + 0x1000, &r, sizeof(r)), 0);
    assert_true(r == v);
    assert_int_equal(guest_mem_write(&mem, hole - 4, &v, sizeof(v)), -EFAULT);
    assert_int_equal(guest_mem_read(&mem, UINT64_MAX - 3, &r, sizeof(r)), -EFAULT);
    guest_mem_destroy(&mem);
}

static void test_create_64g_unfaulted(void **state)
{
    struct guest_mem mem;
    struct wisp_err err = {0};
    /* 64 GiB must map on a host with less free memory: MAP_NORESERVE, nothing touched */
    assert_int_equal(guest_mem_create(&mem, 64 * GiB, &err), 0);
    assert_true(mem.total == 64 * GiB);
    assert_non_null(gpa_to_hva(&mem, 64 * GiB + GiB - 1, 1)); /* last byte: 1 GiB shifted */
    assert_null(gpa_to_hva(&mem, 65 * GiB, 1));
    guest_mem_destroy(&mem);
}

/* Host pages of [hva, hva + len) resident in this process (mincore). */
static unsigned resident_pages(const void *hva, size_t len)
{
    unsigned char vec[64];
    assert_true(len / 4096 <= sizeof(vec));
    assert_int_equal(mincore((void *)hva, len, vec), 0);
    unsigned n = 0;
    for (size_t i = 0; i < len / 4096; i++)
        n += vec[i] & 1;
    return n;
}

/* A backend's RAM: 16 pages written, 8 of them discarded; those read as zero afterwards and
 * their host pages are gone (out of the process for private memory, out of the file for a
 * shared one); the others keep their bytes. */
static void check_discard(const struct guest_mem_options *o)
{
    struct guest_mem mem;
    struct wisp_err err = {0};
    assert_int_equal(guest_mem_create_with(&mem, 4 << 20, o, &err), 0);
    assert_true(mem.fresh_zero);
    uint8_t *hva = gpa_to_hva(&mem, 0, 16 * 4096);
    assert_non_null(hva);
    memset(hva, 0xa5, 16 * 4096);
    struct stat before, after;
    if (mem.shared)
        assert_int_equal(fstat(mem.fd, &before), 0);
    assert_int_equal(guest_mem_discard(&mem, 4 * 4096, 8 * 4096), 0);
    if (mem.shared) { /* before the reads below, which may fill the hole again (shmem) */
        assert_int_equal(fstat(mem.fd, &after), 0);
        assert_true(after.st_blocks < before.st_blocks); /* the hole is punched */
        assert_int_equal(after.st_size, 4 << 20);
    }
    for (unsigned p = 0; p < 16; p++) {
        uint8_t want = p >= 4 && p < 12 ? 0 : 0xa5;
        assert_int_equal(hva[p * 4096], want);
        assert_int_equal(hva[p * 4096 + 4095], want);
    }
    if (!mem.shared) {
        /* the reads above mapped the zero page: discarded again, nothing is resident */
        assert_int_equal(resident_pages(hva, 4 * 4096), 4);
        assert_int_equal(guest_mem_discard(&mem, 4 * 4096, 8 * 4096), 0);
        assert_int_equal(resident_pages(hva + 4 * 4096, 8 * 4096), 0);
    }
    /* what a guest may send: unaligned, outside RAM, wrapping around */
    assert_int_equal(guest_mem_discard(&mem, 4096 + 1, 4096), -EINVAL);
    assert_int_equal(guest_mem_discard(&mem, 4096, 100), -EINVAL);
    assert_int_equal(guest_mem_discard(&mem, 4 << 20, 4096), -EFAULT);
    assert_int_equal(guest_mem_discard(&mem, (4 << 20) - 4096, 8192), -EFAULT);
    assert_int_equal(guest_mem_discard(&mem, UINT64_MAX & ~0xfffull, 8192), -EFAULT);
    guest_mem_destroy(&mem);
}

static void test_discard_anon(void **state)
{
    check_discard(&(struct guest_mem_options){.backend = GUEST_MEM_ANON});
}

static void test_discard_memfd_sealed(void **state)
{
    struct guest_mem_options o = {.backend = GUEST_MEM_MEMFD};
    check_discard(&o);
    struct guest_mem mem;
    struct wisp_err err = {0};
    assert_int_equal(guest_mem_create_with(&mem, 4 << 20, &o, &err), 0);
    assert_int_not_equal(ftruncate(mem.fd, 2 << 20), 0); /* F_SEAL_SHRINK */
    assert_int_not_equal(ftruncate(mem.fd, 8 << 20), 0); /* F_SEAL_GROW */
    guest_mem_destroy(&mem);
}

static void test_discard_file(void **state)
{
    char path[] = "/tmp/wisp-test-ram-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "old contents", 12), 12); /* truncated: RAM starts as zeroes */
    close(fd);
    check_discard(&(struct guest_mem_options){.backend = GUEST_MEM_FILE, .path = path});
    unlink(path);
}

static void test_backend_refusals(void **state)
{
    struct guest_mem mem;
    struct wisp_err err = {0};
    struct guest_mem_options ksm = {.backend = GUEST_MEM_MEMFD, .ksm = true};
    assert_int_equal(guest_mem_create_with(&mem, 4 << 20, &ksm, &err), -EINVAL);
    assert_non_null(strstr(err.msg, "KSM"));
    struct guest_mem_options thp = {.backend = GUEST_MEM_HUGETLBFS, .thp = GUEST_MEM_ON};
    assert_int_equal(guest_mem_create_with(&mem, 4 << 20, &thp, &err), -EINVAL);
    struct guest_mem_options odd = {.backend = GUEST_MEM_HUGETLBFS};
    assert_int_equal(guest_mem_create_with(&mem, 3 << 20, &odd, &err), -EINVAL);
    assert_non_null(strstr(err.msg, "2 MiB"));
    struct guest_mem_options nofile = {.backend = GUEST_MEM_FILE};
    assert_int_equal(guest_mem_create_with(&mem, 4 << 20, &nofile, &err), -EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_layout_small_and_split),   cmocka_unit_test(test_layout_rejects),
        cmocka_unit_test(test_gpa_to_hva_single_region), cmocka_unit_test(test_gpa_to_hva_hole),
        cmocka_unit_test(test_create_64g_unfaulted),     cmocka_unit_test(test_discard_anon),
        cmocka_unit_test(test_discard_memfd_sealed),     cmocka_unit_test(test_discard_file),
        cmocka_unit_test(test_backend_refusals),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
