// Intentionally empty: CLiburing.h holds the shim as static inline functions.
#include "CLiburing.h"
