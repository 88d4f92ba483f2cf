/* cellroute.h must compile as strict C99. */
#include "cellroute.h"

int main(void) {
  cr_request req = CR_REQUEST_INIT;
  (void)req;
  return cr_error_last() == 0;
}
