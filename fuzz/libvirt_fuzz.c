/* libFuzzer target: wisp import-libvirt's reader of libvirt domain XML (src/cli/libvirt_xml.c)
 * on any bytes: libxml2's parse (no network, no DTD, no entity substitution) and the walk that
 * turns a domain into a wisp definition. A definition that comes out must be a JSON object with
 * a name, and both outcomes must leave nothing allocated. */
#include <stdint.h>
#include <stdlib.h>

#include "../src/cli/libvirt_xml.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[512];
    json_t *def = NULL, *warnings = NULL;
    if (libvirt_to_def((const char *)data, size, &def, &warnings, err, sizeof(err)) == 0) {
        if (!json_is_object(def) || !json_is_string(json_object_get(def, "name")) ||
            !json_is_array(warnings))
            abort();
        json_decref(def);
        json_decref(warnings);
    } else if (!err[0]) {
        abort(); /* a refusal always says why */
    }
    return 0;
}
