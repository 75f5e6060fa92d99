/*
 * signals: the pure checks on names and addresses behind classification
 * signals, one file per concern: rdns.h (PTRGENERIC), helo.h (HELO),
 * cidr.h (ALLOWLIST, DENYLIST). This header only gathers them.
 */
#ifndef SLUICE_SIGNALS_H
#define SLUICE_SIGNALS_H

#include "cidr.h"
#include "helo.h"
#include "rdns.h"

#endif
