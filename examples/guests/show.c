// Prints what the guest was given: each argument, each environment variable, and the
// contents of every file named by an argument of the form `@/path`. A `+/path` argument
// tries to write to that path and reports whether it could.
#include <errno.h>
#include <stdio.h>
#include <string.h>

extern char **environ;

int main(int argc, char **argv) {
    for (int i = 0; i < argc; i++) {
        printf("arg[%d]=%s\n", i, argv[i]);
    }
    for (char **e = environ; *e; e++) {
        printf("env:%s\n", *e);
    }
    for (int i = 1; i < argc; i++) {
        if (argv[i][0] == '@') {
            FILE *f = fopen(argv[i] + 1, "r");
            if (!f) {
                printf("file:%s: error %s\n", argv[i] + 1, strerror(errno));
                continue;
            }
            char line[4096];
            while (fgets(line, sizeof line, f)) {
                line[strcspn(line, "\n")] = 0;
                printf("file:%s:%s\n", argv[i] + 1, line);
            }
            fclose(f);
        } else if (argv[i][0] == '+') {
            FILE *f = fopen(argv[i] + 1, "w");
            printf("write:%s:%s\n", argv[i] + 1, f ? "ok" : strerror(errno));
            if (f) {
                fputs("written by the guest\n", f);
                fclose(f);
            }
        }
    }
    fflush(stdout);
    return 0;
}
