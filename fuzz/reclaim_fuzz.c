/* libFuzzer target: the automatic balloon's parsers and policy (src/wispd/reclaim_policy.c): a
 * VM definition's balloon (reclaim_check_def, an API body: what it accepts must check again to
 * itself and keep amount_mib + auto_min_mib <= memory_mib), a PSI file's and /proc/meminfo's
 * text, --reclaim's option list, and the policy over views made of the input's bytes (what the
 * guests' statistics may say): a new target never passes the floor on the host's side, never
 * falls below the base, and a guest's need only ever lowers it.
 *
 * Input: [0] selects the entry (byte % 5: definition, PSI text, meminfo text, options, views),
 * the rest is the text or the bytes. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "api/json.h"
#include "fuzz_text.h"
#include "wispd/reclaim.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void definition(const char *text, size_t len)
{
    struct wisp_err err = {0};
    json_t *def;
    if (api_json_parse_object(text, len, "definition", &def, &err) < 0)
        return;
    json_int_t m = json_integer_value(json_object_get(def, "memory_mib"));
    if (m < 2 || m > 1048576) { /* vmdef_parse checked it before (wispd.h) */
        json_decref(def);
        return;
    }
    if (reclaim_check_def(def, &err) == 0) {
        json_t *b = json_object_get(def, "balloon");
        char *once = json_dumps(def, JSON_SORT_KEYS);
        if (reclaim_check_def(def, &err) != 0)
            abort();
        char *twice = json_dumps(def, JSON_SORT_KEYS);
        if (strcmp(once, twice))
            abort();
        json_int_t mem = json_integer_value(json_object_get(def, "memory_mib"));
        if (json_is_true(json_object_get(b, "auto")) &&
            json_integer_value(json_object_get(b, "amount_mib")) +
                    json_integer_value(json_object_get(b, "auto_min_mib")) >
                mem)
            abort();
        free(once);
        free(twice);
    }
    json_decref(def);
}

static void views(const uint8_t *p, size_t size)
{
    struct reclaim_config c;
    reclaim_config_defaults(&c);
    struct reclaim_view v[8];
    struct reclaim_decision d[8];
    size_t n = 0;
    for (; n < 8 && size >= 16; n++, p += 16, size -= 16) {
        uint32_t mem = 2 + (p[0] | p[1] << 8);
        uint32_t min = (p[2] | p[3] << 8) % (mem + 1);
        uint32_t base = (p[4] | p[5] << 8) % (mem - min + 1);
        uint32_t target = base + (p[6] | p[7] << 8) % (mem - min - base + 1);
        v[n] = (struct reclaim_view){.memory_mib = mem,
                                     .base_mib = base,
                                     .min_mib = min,
                                     .margin_mib = p[8],
                                     .target_mib = target,
                                     .actual_mib = (p[9] | p[10] << 8) % (mem + 1),
                                     .have_stats = p[11] & 1,
                                     .settled = p[11] & 2,
                                     .fresh = p[11] & 4,
                                     .oom_deflated = p[11] & 8,
                                     .free_mib = (p[12] | p[13] << 8) % (mem + 1),
                                     .available_mib = (p[14] | p[15] << 8) % (mem + 1),
                                     .recent_available_mib = p[12] | p[15] << 8,
                                     .holdoff_until_ms = p[11] & 16 ? 1000 : 0};
    }
    for (enum reclaim_action a = RECLAIM_HOLD; a <= RECLAIM_DEFLATE; a++) {
        if (reclaim_policy(&c, a, 500, v, n, d) < 0)
            continue;
        uint64_t moved = 0;
        for (size_t i = 0; i < n; i++) {
            uint32_t t = d[i].target_mib, old = v[i].target_mib;
            if (t < v[i].base_mib && t != old)
                abort();
            if (d[i].reason == RECLAIM_HOST_INFLATE &&
                (a != RECLAIM_INFLATE || t <= old || t + v[i].min_mib > v[i].memory_mib))
                abort();
            if ((d[i].reason == RECLAIM_GUEST_NEEDS || d[i].reason == RECLAIM_GUEST_OOM ||
                 d[i].reason == RECLAIM_HOST_DEFLATE) &&
                t >= old)
                abort();
            if (d[i].reason == RECLAIM_KEEP && t != old)
                abort();
            if (d[i].reason == RECLAIM_HOST_INFLATE || d[i].reason == RECLAIM_HOST_DEFLATE)
                moved += t > old ? t - old : old - t;
        }
        if (moved > c.step_mib) /* the host's side moves at most a step per tick */
            abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = fuzz_text(data, size, 4096);
    if (!text)
        return 0;
    double avg10;
    uint64_t avail, total;
    struct reclaim_config c;
    struct wisp_err err = {0};
    switch (data[0] % 5) {
    case 0:
        definition(text, size - 1);
        break;
    case 1:
        if (reclaim_parse_psi(text, &avg10) && !(avg10 >= 0 && avg10 <= 100))
            abort();
        break;
    case 2:
        reclaim_parse_meminfo(text, &avail, &total);
        break;
    case 3:
        reclaim_config_defaults(&c);
        if (reclaim_parse_options(&c, text, &err) == 0 && !c.off &&
            (c.low >= c.high || c.avail_low_pct >= c.avail_high_pct || c.interval_ms < 50))
            abort();
        break;
    default:
        views(data + 1, size - 1);
    }
    free(text);
    return 0;
}
