/* cellroute version: the one place it is written. CMake reads these three lines. */
#ifndef CELLROUTE_VERSION_H
#define CELLROUTE_VERSION_H

#define CR_VERSION_MAJOR 0
#define CR_VERSION_MINOR 1
#define CR_VERSION_PATCH 0

/* "MAJOR.MINOR.PATCH", from the three numbers above. */
#define CR_VERSION_STR_(x) #x
#define CR_VERSION_STR(x) CR_VERSION_STR_(x)
#define CR_VERSION_STRING \
  CR_VERSION_STR(CR_VERSION_MAJOR) "." CR_VERSION_STR(CR_VERSION_MINOR) "." CR_VERSION_STR(CR_VERSION_PATCH)

#endif /* CELLROUTE_VERSION_H */
