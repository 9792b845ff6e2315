// Prints a line to stdout and one to stderr, then exits with the code given as the
// first argument (or $EXIT_CODE, or 0).
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv) {
    const char *code = argc > 1 ? argv[1] : getenv("EXIT_CODE");
    int n = code ? atoi(code) : 0;
    printf("exiting with %d\n", n);
    fprintf(stderr, "this goes to stderr\n");
    return n;
}
