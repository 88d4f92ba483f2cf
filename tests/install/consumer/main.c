#include <cellroute.h>
#include <stdio.h>
#include <string.h>

int main(void) {
  cr_router *router = NULL;
  cr_decision *d = NULL;
  cr_request r = CR_REQUEST_INIT;
  r.path = "/gitlab-org/gitlab";
  r.path_len = strlen(r.path);
  if (cr_router_new(&router, NULL) != CR_OK || cr_decision_new(&d) != CR_OK ||
      cr_router_route(d, router, &r) != CR_OK) {
    fprintf(stderr, "%s\n", cr_error_last()->message);
    return 1;
  }
  printf("%s %lld\n", cr_version(), (long long)cr_decision_cell_id(d));
  cr_decision_free(d);
  cr_router_free(router);
  return cr_decision_cell_id(NULL) != 0;
}
