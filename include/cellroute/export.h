// Symbol visibility for the C++ API. The library is built with -fvisibility=hidden; only what
// is marked CELLROUTE_EXPORT is visible to programs that link it.
#pragma once

#if defined(CELLROUTE_STATIC)
#define CELLROUTE_EXPORT
#elif defined(__GNUC__)
#define CELLROUTE_EXPORT __attribute__((visibility("default")))
#else
#define CELLROUTE_EXPORT
#endif
