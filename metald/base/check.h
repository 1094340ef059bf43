#pragma once
// Invariant checks (error policy, docs/design.md): METALD_CHECK is always on and aborts with a
// message on a broken invariant ("cannot happen"); METALD_ASSERT is the debug-only form. Neither
// is for conditions the outside world can cause: those return a Status.

#include <cstdio>
#include <cstdlib>

#define METALD_CHECK(cond)                                                                 \
  do {                                                                                     \
    if (!(cond)) {                                                                         \
      std::fprintf(stderr, "%s:%d: METALD_CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
      std::abort();                                                                        \
    }                                                                                      \
  } while (0)

#ifdef NDEBUG
#define METALD_ASSERT(cond) \
  do {                      \
    (void)sizeof(cond);     \
  } while (0)
#else
#define METALD_ASSERT(cond) METALD_CHECK(cond)
#endif
