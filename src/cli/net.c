/* `wisp net ...`: wispd's networks (docs/wispd.md, "Networks"), through /v1/networks. */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "common/cleanup.h"
#include "cli.h"

/* One request to /v1/networks...: the answer as JSON with --json, else by show(). */
static int net_call(const char *method, const char *path, const char *body,
                    void (*show)(json_t *answer))
{
    unsigned status;
    cleanup_free char *answer = NULL;
    if (cli_request(method, path, body, &status, &answer) < 0)
        return EXIT_NO_DAEMON;
    if (status >= 300)
        return cli_print_error(status, answer);
    json_t *j = json_loads(answer, 0, NULL);
    if (j && cli_json) {
        json_dumpf(j, stdout, JSON_INDENT(2));
        putchar('\n');
    } else if (j && show) {
        show(j);
    }
    json_decref(j);
    return 0;
}

static void show_net_line(json_t *n)
{
    json_t *vms = json_object_get(n, "vms");
    printf("%-12s %-18s %-15s %-15s %-10s %-3s %-3s %4zu\n",
           json_string_value(json_object_get(n, "name")),
           json_string_value(json_object_get(n, "subnet")),
           json_string_value(json_object_get(n, "gateway")),
           json_string_value(json_object_get(n, "bridge")),
           json_string_value(json_object_get(n, "state")),
           json_is_true(json_object_get(n, "nat")) ? "yes" : "no",
           json_is_true(json_object_get(n, "dns")) ? "yes" : "no", json_array_size(vms));
}

static void show_nets(json_t *a)
{
    size_t i;
    json_t *n;
    printf("%-12s %-18s %-15s %-15s %-10s %-3s %-3s %4s\n", "NAME", "SUBNET", "GATEWAY", "BRIDGE",
           "STATE", "NAT", "DNS", "VMS");
    json_array_foreach(a, i, n) show_net_line(n);
}

static void show_net(json_t *n)
{
    json_t *dm = json_object_get(n, "dnsmasq"), *v;
    size_t i;
    printf("name:       %s\nsubnet:     %s\ngateway:    %s\ndhcp range: %s\nbridge:     %s\n"
           "nat:        %s\ndns:        %s\nstate:      %s\n"
           "dnsmasq:    %s, pid %lld, %lld restarts%s%s\nleases:     %s\nvms:       ",
           json_string_value(json_object_get(n, "name")),
           json_string_value(json_object_get(n, "subnet")),
           json_string_value(json_object_get(n, "gateway")),
           json_string_value(json_object_get(n, "dhcp_range")),
           json_string_value(json_object_get(n, "bridge")),
           json_is_true(json_object_get(n, "nat")) ? "yes" : "no",
           json_is_true(json_object_get(n, "dns")) ? "yes" : "no",
           json_string_value(json_object_get(n, "state")),
           json_string_value(json_object_get(dm, "state")),
           (long long)json_integer_value(json_object_get(dm, "pid")),
           (long long)json_integer_value(json_object_get(dm, "restarts")),
           *json_string_value(json_object_get(dm, "last_exit")) ? ", last: " : "",
           json_string_value(json_object_get(dm, "last_exit")),
           json_string_value(json_object_get(n, "lease_file")));
    json_array_foreach(json_object_get(n, "vms"), i, v) printf(" %s", json_string_value(v));
    putchar('\n');
}

static void show_created(json_t *n)
{
    printf("%s: %s on %s, gateway %s\n", json_string_value(json_object_get(n, "name")),
           json_string_value(json_object_get(n, "subnet")),
           json_string_value(json_object_get(n, "bridge")),
           json_string_value(json_object_get(n, "gateway")));
}

static int net_create(int argc, char **argv)
{
    static const struct option opts[] = {
        {"subnet", required_argument, NULL, 's'},     {"gateway", required_argument, NULL, 'g'},
        {"dhcp-range", required_argument, NULL, 'r'}, {"nat", no_argument, NULL, 'n'},
        {"no-nat", no_argument, NULL, 'N'},           {"dns", no_argument, NULL, 'd'},
        {"no-dns", no_argument, NULL, 'D'},           {0}};
    if (argc < 2 || argv[1][0] == '-')
        return cli_usage_error("%s", "net create: give NAME, then --subnet CIDR");
    json_t *def = json_pack("{s:s}", "name", argv[1]);
    int c, ret = 0;
    optind = 2;
    opterr = 0;
    while (ret == 0 && (c = getopt_long(argc, argv, "+", opts, NULL)) != -1) {
        if (c == 's' || c == 'g' || c == 'r')
            json_object_set_new(def,
                                c == 's'   ? "subnet"
                                : c == 'g' ? "gateway"
                                           : "dhcp_range",
                                json_string(optarg));
        else if (c == 'n' || c == 'N')
            json_object_set_new(def, "nat", json_boolean(c == 'n'));
        else if (c == 'd' || c == 'D')
            json_object_set_new(def, "dns", json_boolean(c == 'd'));
        else
            ret = cli_usage_error("net create: unknown option or missing value '%s'",
                                  argv[optind - 1]);
    }
    if (ret == 0 && optind < argc)
        ret = cli_usage_error("net create: unexpected argument '%s'", argv[optind]);
    if (ret == 0 && !json_object_get(def, "subnet"))
        ret = cli_usage_error("%s", "net create: --subnet is missing (e.g. 198.51.100.0/24)");
    if (ret == 0) {
        cleanup_free char *text = json_dumps(def, 0);
        ret = net_call("POST", "/v1/networks", text, show_created);
    }
    json_decref(def);
    return ret;
}

int cmd_net(int argc, char **argv)
{
    char path[128];
    const char *sub = argc > 1 ? argv[1] : "";
    if (!strcmp(sub, "ls") || !strcmp(sub, "list")) {
        if (argc != 2)
            return cli_usage_error("net ls: unexpected argument '%s'", argv[2]);
        return net_call("GET", "/v1/networks", NULL, show_nets);
    }
    if (!strcmp(sub, "create"))
        return net_create(argc - 1, argv + 1);
    if (!strcmp(sub, "show") || !strcmp(sub, "rm")) {
        bool force = argc == 4 && (!strcmp(argv[2], "-f") || !strcmp(argv[2], "--force"));
        bool rm = !strcmp(sub, "rm");
        if (argc != 3 + (rm && force))
            return cli_usage_error("net %s: give %sNAME", sub, rm ? "[-f|--force] " : "");
        const char *name = argv[argc - 1];
        if (strchr(name, '/') || strlen(name) > 64 || name[0] == '-')
            return cli_usage_error("'%s' is not a network name", name);
        snprintf(path, sizeof(path), "/v1/networks/%s%s", name, force ? "/force" : "");
        return rm ? net_call("DELETE", path, NULL, NULL) : net_call("GET", path, NULL, show_net);
    }
    return cli_usage_error("net: %s '%s' (ls, create, show, rm)",
                           argc > 1 ? "unknown command" : "give a command", sub);
}
