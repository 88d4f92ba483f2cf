/* Routes requests read from standard input with the C API and prints one line per request:
 * "<cell id> <address>". Input, one request per line, tab-separated:
 *   METHOD \t PATH \t QUERY \t NAME: VALUE \t NAME: VALUE ...
 * Used to check that C routes the README's example requests as the CLI does. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cellroute.h"

int main(void) {
  cr_router *router = NULL;
  cr_decision *d = NULL;
  char line[65536];
  if (cr_router_new(&router, NULL) != CR_OK || cr_decision_new(&d) != CR_OK) {
    fprintf(stderr, "%s\n", cr_error_last()->message);
    return 2;
  }
  while (fgets(line, sizeof line, stdin) != NULL) {
    char *fields[64];
    size_t n = 0, i;
    cr_header headers[60];
    size_t header_count = 0;
    cr_request req = CR_REQUEST_INIT;
    char *p = line, *tab;
    line[strcspn(line, "\n")] = '\0';
    while (n < 64) {
      fields[n++] = p;
      tab = strchr(p, '\t');
      if (tab == NULL) break;
      *tab = '\0';
      p = tab + 1;
    }
    if (n < 3) continue;
    req.method = fields[0];
    req.method_len = strlen(fields[0]);
    req.path = fields[1];
    req.path_len = strlen(fields[1]);
    req.query = fields[2];
    req.query_len = strlen(fields[2]);
    for (i = 3; i < n && header_count < 60; ++i) {
      char *colon = strchr(fields[i], ':');
      if (colon == NULL) continue;
      headers[header_count].name = fields[i];
      headers[header_count].name_len = (size_t)(colon - fields[i]);
      headers[header_count].value = colon + 2;
      headers[header_count].value_len = strlen(colon + 2);
      ++header_count;
    }
    req.headers = headers;
    req.header_count = header_count;
    if (cr_router_route(d, router, &req) != CR_OK) {
      fprintf(stderr, "%s\n", cr_error_last()->message);
      return 1;
    }
    printf("%lld %s\n", (long long)cr_decision_cell_id(d), cr_decision_address(d));
  }
  cr_decision_free(d);
  cr_router_free(router);
  return 0;
}
