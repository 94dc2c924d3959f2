#include <cstdio>
int main() { std::puts("kvrag 0.1.0"); return 0; }
