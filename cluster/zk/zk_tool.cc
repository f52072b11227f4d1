// A small ZooKeeper client for the discovery tests: plays the other writers a cluster's
// ZooKeeper may have (an operator's CLI, a misconfigured or hostile process). Built beside
// the discovery module, only where the ZooKeeper C client is installed.
//
//   zk-tool SERVERS create PATH DATA           a persistent znode
//   zk-tool SERVERS set PATH DATA
//   zk-tool SERVERS deleteall PATH             PATH and everything under it
//   zk-tool SERVERS steal PATH DATA HOLD_MS    delete PATH and make it ours (ephemeral) in one
//                                              transaction; keep the session HOLD_MS
//   zk-tool SERVERS many PREFIX N DATA         N persistent znodes PREFIX0.. (DATA's %d: i)
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zookeeper/zookeeper.h>

#include <string>
#include <vector>

namespace {

// PATH and its children (one level: the layout's), in one transaction, so that the nodes
// cannot register again in between.
int deleteall(zhandle_t *zh, const std::string &path) {
    String_vector kids{};
    int rc = zoo_get_children(zh, path.c_str(), 0, &kids);
    if (rc == ZNONODE) return ZOK;
    if (rc != ZOK) return rc;
    std::vector<std::string> paths;
    for (int i = 0; i < kids.count; i++)
        paths.push_back(path + "/" + kids.data[i]);
    deallocate_String_vector(&kids);
    paths.push_back(path);
    std::vector<zoo_op_t> ops(paths.size());
    std::vector<zoo_op_result_t> res(paths.size());
    for (size_t i = 0; i < paths.size(); i++)
        zoo_delete_op_init(&ops[i], paths[i].c_str(), -1);
    return zoo_multi(zh, int(ops.size()), ops.data(), res.data());
}

}  // namespace

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: zk-tool SERVERS create|set|deleteall|steal|many ...\n");
        return 2;
    }
    zoo_set_debug_level(ZOO_LOG_LEVEL_ERROR);
    zhandle_t *zh = zookeeper_init(argv[1], nullptr, 10000, nullptr, nullptr, 0);
    if (!zh) return 1;
    for (int i = 0; i < 100 && zoo_state(zh) != ZOO_CONNECTED_STATE; i++)
        usleep(50000);
    std::string op = argv[2], path = argv[3];
    const char *data = argc > 4 ? argv[4] : "";
    int rc = ZOK;
    if (op == "create") {
        rc = zoo_create(zh, path.c_str(), data, int(strlen(data)), &ZOO_OPEN_ACL_UNSAFE, 0, nullptr,
                        0);
    } else if (op == "set") {
        rc = zoo_set(zh, path.c_str(), data, int(strlen(data)), -1);
    } else if (op == "deleteall") {
        // The nodes make their znodes again while we delete: try again until it is empty.
        for (int tries = 0; tries < 50; tries++) {
            rc = deleteall(zh, path);
            if (rc != ZNOTEMPTY && rc != ZNONODE) break;
        }
    } else if (op == "steal" && argc > 5) {
        zoo_op_t ops[2];
        zoo_op_result_t res[2];
        zoo_delete_op_init(&ops[0], path.c_str(), -1);
        zoo_create_op_init(&ops[1], path.c_str(), data, int(strlen(data)), &ZOO_OPEN_ACL_UNSAFE,
                           ZOO_EPHEMERAL, nullptr, 0);
        rc = zoo_multi(zh, 2, ops, res);
        if (rc == ZOK) usleep(useconds_t(atoi(argv[5])) * 1000);
    } else if (op == "many" && argc > 5) {
        int n = atoi(argv[4]);
        for (int i = 0; i < n && rc == ZOK; i++) {
            std::string name = path + std::to_string(i), value = argv[5];
            size_t at = value.find("%d");
            if (at != std::string::npos) value.replace(at, 2, std::to_string(i));
            rc = zoo_create(zh, name.c_str(), value.data(), int(value.size()), &ZOO_OPEN_ACL_UNSAFE,
                            0, nullptr, 0);
        }
    } else {
        fprintf(stderr, "zk-tool: unknown operation %s\n", op.c_str());
        rc = ZBADARGUMENTS;
    }
    if (rc != ZOK) fprintf(stderr, "zk-tool %s %s: %s\n", op.c_str(), path.c_str(), zerror(rc));
    zookeeper_close(zh);
    return rc == ZOK ? 0 : 1;
}
