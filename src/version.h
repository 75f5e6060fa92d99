/*
 * version: the program's version (sluice -V, the upgrade log lines). The
 * build sets it from debian/changelog (Makefile: -DSLUICE_VERSION); the
 * default is for builds without it.
 */
#ifndef SLUICE_VERSION_H
#define SLUICE_VERSION_H

#ifndef SLUICE_VERSION
#define SLUICE_VERSION "0.1.0"
#endif

#endif
