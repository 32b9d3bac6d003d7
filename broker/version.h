/* The broker's version string, reported by --version and Hello. */
#ifndef KAPPA_BROKER_VERSION_H
#define KAPPA_BROKER_VERSION_H

#define KAPPA_BROKER_VERSION "0.1.0"

#endif /* KAPPA_BROKER_VERSION_H */
