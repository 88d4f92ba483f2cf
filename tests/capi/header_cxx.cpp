// cellroute.h must compile as C++ too.
#include "cellroute.h"

int main() {
  cr_request req = CR_REQUEST_INIT;
  (void)req;
  return cr_error_last() == nullptr;
}
