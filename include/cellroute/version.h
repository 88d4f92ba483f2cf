/* cellroute version: the one place it is written. CMake reads these three lines. */
#ifndef CELLROUTE_VERSION_H
#define CELLROUTE_VERSION_H

#define CR_VERSION_MAJOR 0
#define CR_VERSION_MINOR 1
#define CR_VERSION_PATCH 0

#endif /* CELLROUTE_VERSION_H */
