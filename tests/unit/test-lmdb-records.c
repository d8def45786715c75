#include "lib.h"
#include "test-common.h"
int main(void) { static void (*const tests[])(void) = { NULL }; return test_run(tests); }
