/* libFuzzer target: wispd's network definitions and the addresses in them (src/wispd/netdef.c):
 * a `net create` body (netdef_check, then netdef_to_json of what it accepted, which must check
 * again to the same network), a VM definition's nics[] (netdef_check_nics), and the bare
 * parsers of IPv4 addresses, subnets and MACs, whose accepted input must format back to itself.
 *
 * Input: [0] selects the entry (byte % 3: network body, nics array, bare string), the rest is
 * the text. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "api/json.h"
#include "fuzz_text.h"
#include "wispd/netdef.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void bare(const char *s)
{
    uint32_t a;
    unsigned prefix;
    uint64_t mac;
    char out[24];
    if (net_parse_ipv4(s, &a) == 0) {
        net_format_ipv4(a, out);
        if (strcmp(out, s))
            abort();
    }
    if (net_parse_cidr(s, &a, &prefix) == 0 && prefix > 32)
        abort();
    if (net_parse_mac(s, &mac) == 0) {
        net_format_mac(mac, out);
        if (strcasecmp(out, s) || mac >> 48)
            abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = fuzz_text(data, size, 4096);
    if (!text)
        return 0;
    struct wisp_err err = {0};
    json_t *j = NULL;
    if (data[0] % 3 == 0 && api_json_parse_object(text, size - 1, "network", &j, &err) == 0) {
        struct netdef n, again;
        if (netdef_check(j, &n, &err) == 0) {
            json_t *back = netdef_to_json(&n);
            if (netdef_check(back, &again, &err) != 0 || memcmp(&n, &again, sizeof(n)))
                abort(); /* what is stored must load as the same network */
            json_decref(back);
        }
    } else if (data[0] % 3 == 1) {
        j = json_loadb(text, size - 1, JSON_REJECT_DUPLICATES, NULL);
        if (json_is_array(j)) {
            size_t i;
            json_t *item;
            bool objects = true;
            json_array_foreach(j, i, item) objects &= json_is_object(item);
            if (objects)
                netdef_check_nics(j, &err);
        }
    } else if (data[0] % 3 == 2) {
        bare(text);
    }
    json_decref(j);
    free(text);
    return 0;
}
