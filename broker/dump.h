/* kappad dump: prints partition logs from a stopped node's data directory
 * (offline, read-only) so replicas can be compared byte for byte; the
 * output format is in docs/storage.md ("Dump") and jepsen/README.md. */
#ifndef KAPPA_BROKER_DUMP_H
#define KAPPA_BROKER_DUMP_H

/* Runs "kappad dump DATA_DIR [options]"; argv[0] is "dump". Writes the dump
 * to stdout and diagnostics to stderr. Never modifies DATA_DIR. Returns the
 * process exit status: 0 everything read and valid, 1 corrupt data or an
 * I/O error (reported, the rest still dumped) or the directory is locked
 * by a running kappad, 2 a usage error. */
int dump_main(int argc, char **argv);

#endif /* KAPPA_BROKER_DUMP_H */
