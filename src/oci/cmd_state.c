/* wisp-oci state, list and features: what the engines read (runc's JSON and table). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "oci.h"
#include "state.h"
#include "wisp-config.h"

/* Opens ID for a command that needs it; prints runc's "container does not exist". */
int oci_open_or_fail(const char *id, struct oci_container *c)
{
    struct wisp_err err = {0};
    int r = oci_container_open(id, c, &err);

    if (r == -ENOENT) {
        oci_container_close(c);
        return oci_fail(OCI_EXIT_FAIL, "container does not exist");
    }
    if (r < 0)
        return oci_fail(OCI_EXIT_FAIL, "%s", err.msg);
    return 0;
}

int cmd_state(int argc, char **argv)
{
    const struct oci_opt opts[] = {{NULL, 0, false, NULL, NULL}};
    struct oci_container c;
    int i = oci_parse_opts("state", argc, argv, 1, opts);
    json_t *s;
    char *text;

    if (i < 0)
        return OCI_EXIT_USAGE;
    if (argc - i != 1)
        return oci_usage("state", "\"state\" requires exactly 1 argument(s)");
    if (oci_open_or_fail(argv[i], &c))
        return OCI_EXIT_FAIL;
    s = oci_container_public_state(&c);
    text = json_dumps(s, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    printf("%s\n", text ? text : "{}");
    free(text);
    json_decref(s);
    oci_container_close(&c);
    return 0;
}

int cmd_list(int argc, char **argv)
{
    const char *format = "table";
    bool quiet = false;
    const struct oci_opt opts[] = {{"format", 'f', true, &format, NULL},
                                   {"quiet", 'q', false, NULL, &quiet},
                                   {NULL, 0, false, NULL, NULL}};
    int i = oci_parse_opts("list", argc, argv, 1, opts), n;
    struct wisp_err err = {0};
    json_t *all = json_array();
    char **ids;

    if (i < 0)
        return OCI_EXIT_USAGE;
    if (i != argc)
        return oci_usage("list", "\"list\" takes no arguments");
    if (strcmp(format, "table") != 0 && strcmp(format, "json") != 0)
        return oci_usage("list", "invalid format option");
    n = oci_list_ids(&ids, &err);
    if (n < 0)
        return oci_fail(OCI_EXIT_FAIL, "%s", err.msg);
    for (int k = 0; k < n; k++) {
        struct oci_container c;
        if (oci_container_open(ids[k], &c, &err) == 0)
            json_array_append_new(all, oci_container_public_state(&c));
        oci_container_close(&c);
        free(ids[k]);
    }
    free(ids);
    if (quiet) {
        size_t k;
        json_t *s;
        json_array_foreach(all, k, s)
        {
            printf("%s\n", json_string_value(json_object_get(s, "id")));
        }
    } else if (strcmp(format, "json") == 0) {
        char *text = json_dumps(all, JSON_COMPACT | JSON_PRESERVE_ORDER);
        printf("%s\n", json_array_size(all) ? text : "null");
        free(text);
    } else {
        size_t k;
        json_t *s;
        printf("%-12s%-12s%-12s%-40s%-34s%s\n", "ID", "PID", "STATUS", "BUNDLE", "CREATED",
               "OWNER");
        json_array_foreach(all, k, s)
        {
            printf("%-12s%-12lld%-12s%-40s%-34s%s\n", json_string_value(json_object_get(s, "id")),
                   (long long)json_integer_value(json_object_get(s, "pid")),
                   json_string_value(json_object_get(s, "status")),
                   json_string_value(json_object_get(s, "bundle")),
                   json_string_value(json_object_get(s, "created")),
                   json_string_value(json_object_get(s, "owner")));
        }
    }
    json_decref(all);
    return 0;
}

int cmd_features(int argc, char **argv)
{
    const struct oci_opt opts[] = {{NULL, 0, false, NULL, NULL}};
    int i = oci_parse_opts("features", argc, argv, 1, opts);
    json_t *f;
    char *text;

    if (i < 0)
        return OCI_EXIT_USAGE;
    f = json_pack("{s:s, s:s, s:[], s:[sssssssssssss], s:{s:[ssssss], s:{s:b}, s:{s:b}, "
                  "s:{s:b}, s:{s:b}}, s:{s:s, s:s, s:s}}",
                  "ociVersionMin", "1.0.0", "ociVersionMax", OCI_SPEC_VERSION, "hooks",
                  "mountOptions", "bind", "rbind", "ro", "rw", "nosuid", "nodev", "noexec",
                  "relatime", "noatime", "strictatime", "mode", "size", "private", "linux",
                  "namespaces", "mount", "network", "pid", "ipc", "uts", "cgroup", "cgroup", "v1",
                  1, "seccomp", "enabled", 0, "apparmor", "enabled", 0, "selinux", "enabled", 0,
                  "annotations", "org.opencontainers.runc.version", WISP_VERSION,
                  "io.github.wisp.runtime", "wisp-oci: each container in its own microVM",
                  "io.github.wisp.docs", "docs/oci.md");
    text = json_dumps(f, JSON_INDENT(4) | JSON_PRESERVE_ORDER);
    printf("%s\n", text ? text : "{}");
    free(text);
    json_decref(f);
    return 0;
}
